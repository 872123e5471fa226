"""The ``device`` parameter: where the CNN and the memory-bank search run.

Fitted state never lives on a device: every fitted attribute is a numpy
array or a CPU module, so a model fitted on a GPU is scored, pickled or saved
like one fitted on a CPU. Only the work moves: a copy of the backbone, the
image batches and the memory bank go to the device for the duration of a
call, and the results come back as numpy arrays.
"""

import re

import torch

_DEVICE_PATTERN = re.compile(r"(auto|cpu|mps|cuda)(?::(\d+))?")
DEVICE_HELP = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


def resolve_device(device):
    """The :class:`torch.device` for a ``device`` parameter value.

    ``"auto"`` picks CUDA when available, then Apple's MPS, then the CPU.

    Raises
    ------
    ValueError
        If ``device`` is not one of the accepted values, or names a device
        this machine does not have.
    """
    match = _DEVICE_PATTERN.fullmatch(device) if isinstance(device, str) else None
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise ValueError(f"device must be {DEVICE_HELP}; got {device!r}.")
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            msg = (
                f"device={device!r} was requested but CUDA is not available here "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); "
                "use device='cpu' or 'auto'."
            )
            raise ValueError(msg)
        if index is not None and int(index) >= torch.cuda.device_count():
            msg = (
                f"device={device!r} was requested but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 to "
                f"cuda:{torch.cuda.device_count() - 1})."
            )
            raise ValueError(msg)
        return torch.device(device)
    if kind == "mps" and not _mps_available():
        raise ValueError("device='mps' was requested but Apple's MPS backend is not available here; use device='cpu' or 'auto'.")
    return torch.device(kind)


def _mps_available():
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()
