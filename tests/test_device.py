"""device= (where the CNN and the search run) and reading image files ahead."""

import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

import skpatch
from skpatch import PatchFeaturizer, SoftPatchClassifier, SoftPatchSegmenter, WeightedCoreset
from skpatch._device import resolve_device
from skpatch._prefetch import prefetch_map

CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


def _small(cls, **params):
    return cls(random_state=0, **params).set_params(
        featurizer__image_size=64, featurizer__embed_dim=64, denoise__n_neighbors=4
    )


@pytest.fixture(scope="module")
def data():
    from skpatch.datasets import make_defects

    X, y, _ = make_defects(20, image_size=64, kind="object", defect_ratio=0.3, random_state=0)
    return X[y == 0][:10], X


# -- resolving devices -------------------------------------------------------------


def test_cpu_and_auto_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if CUDA else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device("auto").type == expected


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "cpu:0", "CPU", "", "auto:0"])
def test_unknown_device_raises(device):
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"):
        resolve_device(device)


@pytest.mark.skipif(CUDA, reason="checks the error on machines without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_missing_cuda_raises_a_clear_error(device):
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device(device)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="checks the error without MPS")
def test_missing_mps_raises_a_clear_error():
    with pytest.raises(ValueError, match="MPS backend is not available"):
        resolve_device("mps")


@pytest.mark.skipif(CUDA, reason="checks the error on machines without CUDA")
def test_fit_on_missing_device_fails_before_any_work(data):
    train, _ = data
    with pytest.raises(ValueError, match="CUDA is not available"):
        _small(SoftPatchClassifier, device="cuda").fit(train)
    with pytest.raises(ValueError, match="device must be"):
        _small(SoftPatchClassifier, device="tpu").fit(train)


# -- propagation and device-free fitted state -----------------------------------


def test_estimator_device_reaches_the_steps_left_at_auto(data):
    train, _ = data
    est = _small(SoftPatchClassifier, device="cpu").fit(train)
    featurizer, _, coreset = (step for _, step in est.pipeline_.steps)
    assert featurizer.device == "cpu" and coreset.device == "cpu"
    # An explicit step setting wins, as for n_jobs.
    est = _small(SoftPatchClassifier, device="cpu", memory=WeightedCoreset(device="auto", random_state=0))
    est.set_params(memory__device="cpu").fit(train)
    assert est.named_steps["coreset"].device == "cpu"
    assert "device" in SoftPatchSegmenter().get_params()


@pytest.mark.parametrize("cls", [SoftPatchClassifier, SoftPatchSegmenter])
def test_cpu_and_auto_give_identical_scores_on_this_machine(cls, data):
    if CUDA:
        pytest.skip("auto means CUDA here")
    train, X = data
    auto = _small(cls).fit(train).score_samples(X)
    cpu = _small(cls, device="cpu").fit(train).score_samples(X)
    np.testing.assert_array_equal(auto, cpu)


def test_fitted_state_is_device_free(data):
    train, _ = data
    est = _small(SoftPatchClassifier).fit(train)
    backbone = est.named_steps["featurizer"].backbone_
    assert {p.device.type for p in backbone.parameters()} == {"cpu"}
    coreset = est.named_steps["coreset"]
    for name in ("memory_bank_", "memory_weights_", "ivf_centroids_", "ivf_radii_"):
        assert isinstance(getattr(coreset, name), np.ndarray)


def test_model_whose_device_is_missing_names_the_fix(data, tmp_path):
    """A model fitted with device='cuda' (simulated) on a machine without it."""
    if CUDA:
        pytest.skip("needs a machine without CUDA")
    train, X = data
    est = _small(SoftPatchClassifier, device="cpu").fit(train)
    expected = est.score_samples(X)
    est.device = "cuda"
    for _, step in est.pipeline_.steps:
        if "device" in step.get_params():
            step.set_params(device="cuda")
    est.save(tmp_path / "gpu.skpatch")
    loaded = skpatch.load(tmp_path / "gpu.skpatch")
    with pytest.raises(ValueError, match=r"CUDA is not available.*set_params\(device="):
        loaded.score_samples(X)
    np.testing.assert_array_equal(skpatch.load(tmp_path / "gpu.skpatch", device="cpu").score_samples(X), expected)


def test_coreset_search_device_param_on_cpu(rng):
    X = rng.normal(size=(6, 50, 16)).astype(np.float32)
    for search in ("exact", "brute", "ivf"):
        a = WeightedCoreset(search=search, random_state=0, device="cpu").fit(X).score_samples(X[:2])
        b = WeightedCoreset(search=search, random_state=0).fit(X).score_samples(X[:2])
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="device must be"):
        WeightedCoreset(device="nope").fit(X).score_samples(X[:1])


# -- reading image files ahead -------------------------------------------------------


@pytest.fixture(scope="module")
def image_files(tmp_path_factory, data):
    _, X = data
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, image in enumerate(X):
        paths.append(str(folder / f"{i:02d}.png"))
        Image.fromarray(image).save(paths[-1])
    return paths, X


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_decoding_ahead_keeps_features_and_order(image_files, batch_size):
    paths, X = image_files
    base = PatchFeaturizer(image_size=64, embed_dim=64, batch_size=batch_size, decode_workers=0).fit(X[:2])
    expected = base.transform(X)
    for workers in (0, 1, 3):
        got = base.set_params(decode_workers=workers).transform(paths)
        np.testing.assert_array_equal(got, expected)


def test_unreadable_file_error_surfaces_with_its_path(image_files, tmp_path):
    paths, X = image_files
    featurizer = PatchFeaturizer(image_size=64, embed_dim=64, batch_size=2, decode_workers=2).fit(X[:2])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        featurizer.transform(paths[:5] + [str(broken)] + paths[5:])


def test_prefetch_map_is_ordered_bounded_and_raises_in_turn():
    in_flight, peak, lock = [0], [0], threading.Lock()

    def slow_square(i):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.002 * (i % 3))
        with lock:
            in_flight[0] -= 1
        return i * i

    results = []
    for value in prefetch_map(slow_square, range(40), n_workers=4, ahead=3):
        results.append(value)
    assert results == [i * i for i in range(40)]
    assert peak[0] <= 3
    assert list(prefetch_map(slow_square, range(5), n_workers=0, ahead=0)) == [0, 1, 4, 9, 16]

    def failing(i):
        if i == 4:
            raise ValueError("item 4 is bad")
        return i

    got = []
    with pytest.raises(ValueError, match="item 4 is bad"):
        for value in prefetch_map(failing, range(10), n_workers=2, ahead=2):
            got.append(value)
    assert got == [0, 1, 2, 3]


# -- on a GPU (skipped without CUDA) ----------------------------------------------


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("cls", [SoftPatchClassifier, SoftPatchSegmenter])
def test_gpu_scores_match_cpu(cls, data):
    train, X = data
    cpu = _small(cls, device="cpu").fit(train)
    cuda = _small(cls, device="cuda").fit(train)
    # cuDNN convolutions may use TF32 on Ampere and later GPUs (torch's default).
    np.testing.assert_allclose(cuda.score_samples(X), cpu.score_samples(X), rtol=2e-2, atol=1e-3)


@pytest.mark.gpu
@requires_cuda
def test_gpu_fitted_model_scores_the_same_on_cpu(data, tmp_path):
    train, X = data
    est = _small(SoftPatchClassifier, device="cuda").fit(train)
    est.save(tmp_path / "m.skpatch")
    on_cpu = skpatch.load(tmp_path / "m.skpatch", device="cpu")
    # Same bank; the features of X are computed on the CPU now.
    np.testing.assert_allclose(on_cpu.score_samples(X), est.score_samples(X), rtol=2e-2, atol=1e-3)
    assert {p.device.type for p in est.named_steps["featurizer"].backbone_.parameters()} == {"cpu"}


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("search", ["exact", "brute", "ivf"])
def test_gpu_search_finds_the_cpu_neighbours(search, rng):
    X = rng.normal(size=(20, 100, 32)).astype(np.float32)
    coreset = WeightedCoreset(search=search, random_state=0, device="cpu").fit(X)
    d_cpu, i_cpu = coreset.kneighbors(X[:4].reshape(-1, 32))
    d_gpu, i_gpu = coreset.set_params(device="cuda").kneighbors(X[:4].reshape(-1, 32))
    assert np.mean(i_cpu == i_gpu) > 0.999
    np.testing.assert_allclose(d_gpu, d_cpu, rtol=1e-4, atol=1e-5)
