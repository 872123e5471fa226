import numpy as np

from skpatch._thresholds import lower_half_threshold, robust_threshold


def test_lower_half_threshold_ignores_a_minority_of_high_scores():
    rng = np.random.default_rng(0)
    normal = rng.normal(10.0, 1.0, size=600)
    contaminated = np.concatenate([normal, rng.normal(16.0, 3.0, size=240)])  # 29% defective
    clean = lower_half_threshold(normal)
    assert 11.5 < clean < 12.5  # about 2 standard deviations above the mean
    # The defective images inflate the MAD: the lower-half threshold moves
    # half as much as Hampel's (1.1 against 2.3 standard deviations here).
    lower_shift = lower_half_threshold(contaminated) - clean
    hampel_shift = robust_threshold(contaminated) - robust_threshold(normal)
    assert 0 < lower_shift < 0.5 * hampel_shift
