import numpy as np
import pytest
import torch

from skpatch import PatchFeaturizer


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (5, 70, 90, 3), dtype=np.uint8)


def test_shapes_and_grid(images):
    featurizer = PatchFeaturizer(image_size=64, embed_dim=32).fit(images)
    features = featurizer.transform(images)
    assert featurizer.feature_shape_ == (8, 8)  # stride 8
    assert features.shape == (5, 8, 8, 32) and features.dtype == np.float32  # on the grid
    assert featurizer.n_features_out_ == 32


def test_rectangular_size_and_other_backbone(images):
    featurizer = PatchFeaturizer("resnet18", weights=None, image_size=(64, 96), embed_dim=16).fit(images)
    assert featurizer.feature_shape_ == (8, 12)
    assert featurizer.transform(images[:2]).shape == (2, 8, 12, 16)


def test_batch_size_and_input_type_do_not_change_features(images):
    a = PatchFeaturizer(image_size=64, embed_dim=32, batch_size=1).fit(images)
    b = PatchFeaturizer(image_size=64, embed_dim=32, batch_size=4).fit(images)
    np.testing.assert_allclose(a.transform(images), b.transform(list(images)), rtol=1e-4, atol=1e-5)


def test_float16_storage(images):
    full = PatchFeaturizer(image_size=64, embed_dim=32).fit(images).transform(images)
    half = PatchFeaturizer(image_size=64, embed_dim=32, feature_dtype="float16").fit(images).transform(images)
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32), full, rtol=1e-2, atol=1e-2)


def test_local_aggregation_smooths(images):
    raw = PatchFeaturizer(image_size=64, embed_dim=32, patch_size=1).fit(images).transform(images)
    agg = PatchFeaturizer(image_size=64, embed_dim=32, patch_size=3).fit(images).transform(images)
    # 3x3 averaging lowers the variance across neighbouring positions.
    assert agg.reshape(5, 8, 8, 32).std(axis=(1, 2)).mean() < raw.reshape(5, 8, 8, 32).std(axis=(1, 2)).mean()


def test_defect_changes_only_nearby_features(images):
    featurizer = PatchFeaturizer(image_size=64, embed_dim=32).fit(images)
    clean = images[:1].copy()
    damaged = clean.copy()
    damaged[0, :12, :12] = 0  # top-left corner
    diff = np.abs(featurizer.transform(damaged) - featurizer.transform(clean)).sum(-1).reshape(8, 8)
    assert diff[:2, :2].mean() > 5 * diff[5:, 5:].mean()


def test_threads_restored(images):
    before = torch.get_num_threads()
    PatchFeaturizer(image_size=64, embed_dim=32, n_jobs=1).fit(images).transform(images[:1])
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    "params, match",
    [
        ({"stages": (3, 2)}, "stages"),
        ({"stages": (2, 9)}, "stages"),
        ({"embed_dim": 33}, "multiple"),
        ({"patch_size": 2}, "odd"),
        ({"image_size": (64,)}, "image_size"),
    ],
)
def test_invalid_settings(images, params, match):
    with pytest.raises(ValueError, match=match):
        PatchFeaturizer(image_size=64, embed_dim=32).set_params(**params).fit(images)


def test_transform_before_fit(images):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        PatchFeaturizer().transform(images)


def test_auto_engine_is_torch_without_onnxruntime_or_off_the_cpu(monkeypatch):
    import skpatch._featurizer

    monkeypatch.delenv("SKPATCH_ENGINE", raising=False)
    featurizer = PatchFeaturizer()
    assert featurizer.engine == "auto"
    monkeypatch.setattr(skpatch._featurizer, "_onnxruntime_installed", lambda: True)
    assert featurizer._runs_onnxruntime(torch.device("cpu"))
    assert not featurizer._runs_onnxruntime(torch.device("meta"))  # a GPU, say
    monkeypatch.setenv("SKPATCH_ENGINE", "torch")
    assert not featurizer._runs_onnxruntime(torch.device("cpu"))
    monkeypatch.delenv("SKPATCH_ENGINE")
    monkeypatch.setattr(skpatch._featurizer, "_onnxruntime_installed", lambda: False)
    assert not featurizer._runs_onnxruntime(torch.device("cpu"))
    assert not PatchFeaturizer(engine="torch")._runs_onnxruntime(torch.device("cpu"))
    assert PatchFeaturizer(engine="onnxruntime")._runs_onnxruntime(torch.device("cpu"))
