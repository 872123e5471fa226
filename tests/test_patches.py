import numpy as np
import pytest

from skpatch._patches import check_patch_features


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_non_finite_features_are_refused(bad, dtype):
    X = np.zeros((2, 5, 3), dtype=dtype)
    X[1, 4, 2] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_patch_features(X)


def test_finite_features_whose_sum_overflows_are_accepted():
    """The one-pass check (a finite sum) falls back to the element-wise one
    when finite values overflow the sum."""
    X = np.full((2, 5, 3), np.finfo(np.float32).max, dtype=np.float32)
    with np.errstate(over="ignore"):
        assert not np.isfinite(X.sum())
    features, _, _ = check_patch_features(X)
    assert features is X


def test_float16_features_are_checked_by_a_sum_that_does_not_overflow(monkeypatch):
    """A float16 running sum overflows on ordinary features (200,000 halves);
    the check sums in float32, so it needs no element-wise pass."""
    X = np.full((200, 1000, 1), 0.5, dtype=np.float16)
    calls = []
    original = np.isfinite
    monkeypatch.setattr(np, "isfinite", lambda a: calls.append(np.shape(a)) or original(a))
    check_patch_features(X)
    assert calls == [()]  # only the sum's
