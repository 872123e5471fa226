"""skpatch: unsupervised image anomaly detection that tolerates noisy training data.

SoftPatch / SoftPatch+ with a scikit-learn API: :class:`SoftPatchClassifier`
(is this image defective?) and :class:`SoftPatchSegmenter` (where?), built from
a :class:`~sklearn.pipeline.Pipeline` of :class:`PatchFeaturizer`,
:class:`NoiseDiscriminator` and :class:`WeightedCoreset`.
"""

__version__ = "0.1.0.dev0"

from ._backbones import WeightsUnavailableError
from ._classifier import SoftPatchClassifier
from ._coreset import WeightedCoreset
from ._discriminator import NoiseDiscriminator
from ._featurizer import PatchFeaturizer
from ._onnx import export_onnx
from ._patches import WeightedPatches
from ._segmenter import SoftPatchSegmenter

__all__ = [
    "NoiseDiscriminator",
    "PatchFeaturizer",
    "SoftPatchClassifier",
    "SoftPatchSegmenter",
    "WeightedCoreset",
    "WeightedPatches",
    "WeightsUnavailableError",
    "export_onnx",
]
