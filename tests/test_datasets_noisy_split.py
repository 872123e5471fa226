"""Tests for make_noisy_split, the SoftPatch noisy-training protocol."""

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.utils import Bunch

from skpatch.datasets import make_defect_dataset, make_noisy_split


@pytest.fixture(scope="module")
def eager():
    return make_defect_dataset(
        n_train=20, n_test=16, test_defect_ratio=0.5, image_size=16, random_state=0
    )


def _lazy(n_train=20, n_good=6, n_defective=10):
    """A lazy data set: paths are never opened by make_noisy_split."""
    types = ["good"] * n_good + ["crack"] * n_defective
    n_test = len(types)
    return Bunch(
        train_images=[f"/data/train/good/{i:03d}.png" for i in range(n_train)],
        train_labels=np.zeros(n_train, dtype=int),
        test_images=[f"/data/test/{t}/{i:03d}.png" for i, t in enumerate(types)],
        test_labels=(np.array(types) != "good").astype(int),
        test_defect_types=np.array(types),
        test_masks=np.zeros((n_test, 4, 4), dtype=bool),
        root="/data",
        category="toy",
        DESCR="toy",
    )


@pytest.mark.parametrize("overlap", [False, True])
def test_eager_split(eager, overlap):
    split = make_noisy_split(eager, 0.2, overlap=overlap, random_state=0)
    n_noise = round(0.2 * 20)
    idx = split.noise_indices
    assert len(idx) == n_noise
    assert np.all(eager.test_labels[idx] == 1)
    assert len(np.unique(idx)) == n_noise
    # Injected images are appended, in the order of noise_indices.
    assert isinstance(split.train_images, np.ndarray)
    assert split.train_images.shape == (20 + n_noise, 16, 16, 3)
    np.testing.assert_array_equal(split.train_images[:20], eager.train_images)
    np.testing.assert_array_equal(split.train_images[20:], eager.test_images[idx])
    np.testing.assert_array_equal(split.train_labels, [0] * 20 + [1] * n_noise)
    n_test = 16 if overlap else 16 - n_noise
    for key in ("test_images", "test_labels", "test_defect_types", "test_masks"):
        assert len(split[key]) == n_test
    if not overlap:
        kept = np.setdiff1d(np.arange(16), idx)
        np.testing.assert_array_equal(split.test_images, eager.test_images[kept])
        np.testing.assert_array_equal(split.test_masks, eager.test_masks[kept])
        np.testing.assert_array_equal(
            split.test_defect_types, eager.test_defect_types[kept]
        )
    else:
        np.testing.assert_array_equal(split.test_images, eager.test_images)
    assert split.noise_ratio == 0.2
    assert split.overlap is overlap
    assert split.category == eager.category
    assert "noise_ratio=0.2" in split.DESCR


@pytest.mark.parametrize("overlap", [False, True])
def test_lazy_split_keeps_paths(overlap):
    data = _lazy()
    split = make_noisy_split(data, 0.25, overlap=overlap, random_state=1)
    assert isinstance(split.train_images, list)
    assert isinstance(split.test_images, list)
    assert all(isinstance(p, str) for p in split.train_images)
    assert len(split.train_images) == 25
    injected = split.train_images[20:]
    assert injected == [data.test_images[i] for i in split.noise_indices]
    assert all("/crack/" in p for p in injected)
    remaining = set(split.test_images)
    assert remaining.isdisjoint(injected) != overlap
    assert len(split.test_images) == (16 if overlap else 11)


def test_reproducible_and_random():
    data = _lazy(n_train=20, n_defective=30)
    a = make_noisy_split(data, 0.5, random_state=0)
    b = make_noisy_split(data, 0.5, random_state=0)
    np.testing.assert_array_equal(a.noise_indices, b.noise_indices)
    draws = {
        tuple(make_noisy_split(data, 0.5, random_state=seed).noise_indices)
        for seed in range(5)
    }
    assert len(draws) > 1


def test_input_not_mutated(eager):
    before = copy.deepcopy(dict(eager))
    split = make_noisy_split(eager, 0.3, random_state=0)
    split.train_images[0] = 0
    split.test_masks[...] = True
    split.train_labels[:] = 7
    for key, value in before.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(eager[key], value)
        else:
            assert eager[key] == value
    assert "noise_indices" not in eager

    lazy = _lazy()
    paths = list(lazy.train_images)
    make_noisy_split(lazy, 0.3, random_state=0).train_images.append("x")
    assert lazy.train_images == paths


def test_zero_noise_is_a_copy(eager):
    split = make_noisy_split(eager, 0, random_state=0)
    assert len(split.noise_indices) == 0
    for key in eager:
        if isinstance(eager[key], np.ndarray):
            np.testing.assert_array_equal(split[key], eager[key])
            assert split[key] is not eager[key]
        else:
            assert split[key] == eager[key] or key == "DESCR"


def test_missing_masks_and_labels_are_tolerated():
    data = _lazy()
    data.test_masks = None
    del data["train_labels"]
    split = make_noisy_split(data, 0.2, random_state=0)
    assert split.test_masks is None
    assert split.train_labels.sum() == 4


def test_already_noisy_training_set_counts_good_only():
    data = _lazy(n_train=20, n_defective=20)
    once = make_noisy_split(data, 0.2, random_state=0)
    twice = make_noisy_split(once, 0.1, random_state=0)
    # 10% of the 20 good training images, not of all 24.
    assert twice.train_labels.sum() == 4 + 2


def test_not_enough_defective_images():
    data = _lazy(n_train=20, n_defective=3)
    with pytest.raises(ValueError, match="needs 4 defective test images.*only 3"):
        make_noisy_split(data, 0.2)


@pytest.mark.parametrize("noise_ratio", [1.0, 1.5, -0.1, float("nan"), "0.1"])
def test_invalid_noise_ratio(noise_ratio):
    with pytest.raises(ValueError, match="noise_ratio"):
        make_noisy_split(_lazy(), noise_ratio)


def test_missing_keys():
    data = _lazy()
    del data["test_labels"]
    with pytest.raises(ValueError, match="test_labels"):
        make_noisy_split(data, 0.1)
    with pytest.raises(ValueError, match="dataset"):
        make_noisy_split([1, 2, 3], 0.1)


def test_inconsistent_lengths():
    data = _lazy()
    data.test_defect_types = data.test_defect_types[:-1]
    with pytest.raises(ValueError, match="test_defect_types"):
        make_noisy_split(data, 0.1)
    data = _lazy()
    data.train_labels = data.train_labels[:-1]
    with pytest.raises(ValueError, match="train_labels"):
        make_noisy_split(data, 0.1)


def test_invalid_overlap():
    with pytest.raises(ValueError, match="overlap"):
        make_noisy_split(_lazy(), 0.1, overlap="yes")


@settings(max_examples=40, deadline=None)
@given(
    n_train=st.integers(1, 40),
    n_good=st.integers(0, 10),
    n_defective=st.integers(0, 30),
    noise_ratio=st.floats(0, 1, exclude_max=True),
    overlap=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_split_invariants(n_train, n_good, n_defective, noise_ratio, overlap, seed):
    data = _lazy(n_train, n_good, n_defective)
    n_noise = round(noise_ratio * n_train)
    if n_noise > n_defective:
        with pytest.raises(ValueError, match="defective test images"):
            make_noisy_split(data, noise_ratio, overlap=overlap, random_state=seed)
        return
    split = make_noisy_split(data, noise_ratio, overlap=overlap, random_state=seed)
    assert len(split.train_images) == len(split.train_labels) == n_train + n_noise
    assert split.train_labels.sum() == n_noise
    assert len(set(split.noise_indices)) == n_noise
    n_test = n_good + n_defective
    assert len(split.test_images) == n_test - (0 if overlap else n_noise)
    assert len(split.test_labels) == len(split.test_masks) == len(split.test_images)
    # No image is lost or duplicated across train and test.
    union = set(split.train_images) | set(split.test_images)
    assert union == set(data.train_images) | set(data.test_images)


def test_warns_when_no_defective_test_image_is_left():
    from skpatch.datasets import make_defect_dataset

    data = make_defect_dataset(n_train=20, n_test=8, test_defect_ratio=0.5, image_size=32, random_state=0)
    with pytest.warns(UserWarning, match="no defective image left"):
        split = make_noisy_split(data, 0.2, overlap=False, random_state=0)
    assert split.test_labels.sum() == 0
