"""skpatch: unsupervised image anomaly detection that tolerates noisy training data.

SoftPatch / SoftPatch+ with a scikit-learn API: :class:`SoftPatchClassifier`
(is this image defective?) and :class:`SoftPatchSegmenter` (where?), built from
a :class:`~sklearn.pipeline.Pipeline` of :class:`PatchFeaturizer`,
:class:`NoiseDiscriminator` and :class:`WeightedCoreset`.
"""

from ._version import __version__  # noqa: F401
from ._audit import audit_training_set
from ._backbones import WeightsUnavailableError
from ._bagging import BaggedCoreset
from ._classifier import SoftPatchClassifier
from ._coreset import WeightedCoreset
from ._discriminator import NoiseDiscriminator
from ._featurizer import PatchFeaturizer
from ._onnx import export_onnx
from ._patches import WeightedPatches
from ._persist import ModelFileError, load
from ._segmenter import SoftPatchSegmenter
from . import _base, _persist

# The model-file module creates the estimators when it loads a file, so it
# sits above them and they cannot import it (docs/design.rst): their save
# method calls the writer handed down here, before any estimator can exist.
_base.MODEL_FILE_WRITER["save"] = _persist.save

__all__ = [
    "BaggedCoreset",
    "ModelFileError",
    "NoiseDiscriminator",
    "PatchFeaturizer",
    "SoftPatchClassifier",
    "SoftPatchSegmenter",
    "WeightedCoreset",
    "WeightedPatches",
    "WeightsUnavailableError",
    "audit_training_set",
    "export_onnx",
    "load",
]

# Submodules reachable as attributes after ``import skpatch``, imported on
# first use (as scikit-learn does): skpatch.dask needs the optional extra.
_SUBMODULES = ("dask", "datasets", "metrics", "plotting")


def __getattr__(name):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_SUBMODULES])
