"""Thresholds on held-out anomaly scores of training images (``contamination="auto"``)."""

import numpy as np

# 1.4826 * MAD estimates the standard deviation of normally distributed scores.
_MAD_TO_STD = 1.4826


def robust_threshold(scores, n_std=3.0):
    """Median + ``n_std`` x 1.4826 x MAD (Hampel's rule), insensitive to a
    minority of outliers.

    >>> import numpy as np
    >>> round(float(robust_threshold(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))), 4)
    7.4478
    """
    median = np.median(scores)
    return median + n_std * _MAD_TO_STD * np.median(np.abs(scores - median))


def lower_half_threshold(scores, n_std=2.0):
    """Median + ``n_std`` robust standard deviations estimated from the scores
    below the median only.

    Defective training images add high scores: they inflate the MAD, but
    (while they are fewer than half) not the spread of the lower half,
    which the normal images alone make.

    >>> import numpy as np
    >>> round(float(lower_half_threshold(np.array([1.0, 2.0, 3.0, 90.0, 100.0]))), 4)
    5.9652
    """
    median = np.median(scores)
    below = median - scores[scores <= median]
    return median + n_std * _MAD_TO_STD * np.median(below)
