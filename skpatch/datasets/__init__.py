"""Image data sets: MVTec-layout folders, noisy training splits, synthetic defects."""

from ._mvtec import load_mvtec
from ._noisy_split import make_noisy_split
from ._synthetic import make_defect_dataset, make_defects

__all__ = ["load_mvtec", "make_defect_dataset", "make_defects", "make_noisy_split"]
