"""Tests for skpatch.plotting (drawn with the non-interactive Agg backend)."""

import builtins
import importlib

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from PIL import Image  # noqa: E402

from skpatch.datasets import make_defects  # noqa: E402
from skpatch.plotting import plot_anomaly_map, plot_image_grid, plot_noise_curves  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def defects():
    return make_defects(6, image_size=32, defect_ratio=0.5, defect_types="hole", random_state=0)


# --- plot_anomaly_map ---------------------------------------------------------


def test_anomaly_map_overlays_map_on_image(defects):
    X, y, masks = defects
    anomaly_map = masks[y == 1][0].astype(float)
    _, ax = plt.subplots()
    out = plot_anomaly_map(X[y == 1][0], anomaly_map, ax=ax, alpha=0.3, cmap="viridis")
    assert out is ax
    image, overlay = ax.images
    assert image.get_array().shape == (32, 32, 3)
    np.testing.assert_array_equal(overlay.get_array(), anomaly_map)
    assert overlay.get_alpha() == 0.3
    assert overlay.get_cmap().name == "viridis"
    assert not ax.collections  # no mask, no contour


def test_anomaly_map_draws_mask_contour(defects):
    X, y, masks = defects
    mask = masks[y == 1][0]
    ax = plot_anomaly_map(X[y == 1][0], np.zeros(mask.shape), mask=mask)
    (contour,) = ax.collections
    # The contour surrounds the defect: its vertices lie around the mask's pixels.
    vertices = np.concatenate([path.vertices for path in contour.get_paths()])
    rows, cols = np.nonzero(mask)
    assert rows.min() - 1 <= vertices[:, 1].min() and vertices[:, 1].max() <= rows.max() + 1
    assert cols.min() - 1 <= vertices[:, 0].min() and vertices[:, 0].max() <= cols.max() + 1


def test_anomaly_map_no_contour_for_empty_mask(defects):
    X, _, _ = defects
    ax = plot_anomaly_map(X[0], np.zeros((32, 32)), mask=np.zeros((32, 32), dtype=bool))
    assert not ax.collections


def test_anomaly_map_uses_current_axes_and_fixed_scale():
    image = np.full((16, 16), 0.5)
    ax = plot_anomaly_map(image, np.ones((16, 16)), vmin=0, vmax=4)
    assert ax is plt.gca()
    assert ax.images[-1].get_clim() == (0, 4)


def test_anomaly_map_accepts_paths(tmp_path, defects):
    X, _, _ = defects
    path = tmp_path / "image.png"
    Image.fromarray(X[0]).save(path)
    ax = plot_anomaly_map(str(path), np.zeros((32, 32)))
    np.testing.assert_allclose(ax.images[0].get_array(), X[0] / 255.0, atol=1e-6)


@pytest.mark.parametrize(
    "map_shape, mask_shape",
    [((16, 16), None), ((32, 32, 1), None), ((32,), None), ((32, 32), (16, 16)), ((32, 32), (32, 32, 3))],
)
def test_anomaly_map_wrong_shapes_raise(defects, map_shape, mask_shape):
    X, _, _ = defects
    mask = None if mask_shape is None else np.zeros(mask_shape, dtype=bool)
    with pytest.raises(ValueError, match=r"must have shape \(H, W\) = \(32, 32\)"):
        plot_anomaly_map(X[0], np.zeros(map_shape), mask=mask)


def test_anomaly_map_rejects_non_images():
    with pytest.raises(ValueError, match="shape"):
        plot_anomaly_map(np.zeros(5), np.zeros((5, 5)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        plot_anomaly_map(np.full((4, 4), 2.0), np.zeros((4, 4)))


# --- plot_image_grid ----------------------------------------------------------


def test_image_grid_titles_and_layout(defects):
    X, y, _ = defects
    scores = np.linspace(0, 1, 6)
    axes = plot_image_grid(X, scores, labels=y, n_cols=4, score_name="anomaly")
    assert axes.shape == (6,)
    fig = axes[0].figure
    assert len(fig.axes) == 6
    assert axes[4].get_subplotspec().rowspan.start == 1  # second row
    for ax, label, score in zip(axes, y, scores):
        expected = "defective" if label else "good"
        assert ax.get_title() == f"{expected}\nanomaly {score:.3g}"
        colour = "tab:red" if label else "tab:green"
        assert matplotlib.colors.same_color(ax.title.get_color(), colour)


def test_image_grid_without_scores_and_labels(defects):
    X, _, _ = defects
    axes = plot_image_grid(list(X[:3]), n_cols=10)
    assert [ax.get_title() for ax in axes] == ["", "", ""]
    # n_cols larger than the number of images gives one row of 3.
    assert axes[0].get_subplotspec().get_gridspec().get_geometry() == (1, 3)


def test_image_grid_mixed_sizes_and_paths_into_given_figure(tmp_path, defects):
    X, _, _ = defects
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((48, 40, 3), dtype=np.uint8)).save(path)
    fig = plt.figure()
    axes = plot_image_grid([X[0], str(path), X[1][..., 0]], fig=fig)
    assert axes[0].figure is fig
    assert axes[1].images[0].get_array().shape == (48, 40, 3)
    assert axes[2].images[0].get_array().shape == (32, 32, 3)  # grey -> RGB


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scores": [1.0, 2.0]}, "scores must have shape"),
        ({"labels": np.zeros((6, 1))}, "labels must have shape"),
        ({"labels": [0, 1, 2, 0, 1, 0]}, "labels must be 0"),
        ({"n_cols": 0}, "n_cols"),
    ],
)
def test_image_grid_invalid_arguments_raise(defects, kwargs, match):
    X, _, _ = defects
    with pytest.raises(ValueError, match=match):
        plot_image_grid(X, **kwargs)


def test_image_grid_empty_raises():
    with pytest.raises(ValueError, match="empty"):
        plot_image_grid([])


# --- plot_noise_curves --------------------------------------------------------


def test_noise_curves_one_line_per_detector():
    ratios = [0.0, 0.1, 0.2]
    results = {"PatchCore": [0.99, 0.9, 0.8], "SoftPatch": (0.99, 0.98, 0.98)}
    _, ax = plt.subplots()
    out = plot_noise_curves(ratios, results, ax=ax, ylabel="AUPRO")
    assert out is ax
    assert [line.get_label() for line in ax.lines] == ["PatchCore", "SoftPatch"]
    np.testing.assert_allclose(ax.lines[0].get_xydata(), np.column_stack([ratios, results["PatchCore"]]))
    assert ax.get_ylabel() == "AUPRO" and ax.get_xlabel() == "noise ratio"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["PatchCore", "SoftPatch"]
    assert not any(isinstance(c, PolyCollection) for c in ax.collections)


def test_noise_curves_repeats_give_mean_and_band():
    repeats = np.array([[1.0, 0.8], [0.8, 0.6]])
    ax = plot_noise_curves([0.0, 0.2], {"PatchCore": repeats})
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.9, 0.7])
    (band,) = ax.collections
    ys = band.get_paths()[0].vertices[:, 1]
    np.testing.assert_allclose([ys.min(), ys.max()], [0.6, 1.0])


@pytest.mark.parametrize(
    "ratios, results, match",
    [
        ([0.0, 0.1], {"a": [0.9, 0.8, 0.7]}, r"results\['a'\] must have shape"),
        ([0.0, 0.1], {"a": np.zeros((2, 2, 2))}, r"results\['a'\] must have shape"),
        ([0.0, 0.1], {}, "empty"),
        ([[0.0, 0.1]], {"a": [0.9, 0.8]}, "1-D"),
    ],
)
def test_noise_curves_wrong_shapes_raise(ratios, results, match):
    with pytest.raises(ValueError, match=match):
        plot_noise_curves(ratios, results)


# --- optional dependency --------------------------------------------------------


def test_missing_matplotlib_gives_clear_error(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    plotting = importlib.reload(importlib.import_module("skpatch.plotting"))  # importable without it
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plotting.plot_noise_curves([0.0], {"a": [1.0]})


# --- image reading shared with the estimators ------------------------------------


def test_image_grid_refuses_an_ambiguous_3d_array(defects):
    X, _, _ = defects
    with pytest.raises(ValueError, match=r"ambiguous.*images\[None\]"):
        plot_image_grid(X[0])
    with pytest.raises(TypeError, match="wrap it in a list"):
        plot_image_grid("image.png")
    axes = plot_image_grid(X[:2, ..., :1])  # grayscale stack with its channel axis
    assert axes[0].images[0].get_array().shape == (32, 32, 3)


def test_16_bit_files_are_drawn_at_16_bits(tmp_path):
    from ._png16 import write_png16

    pixels = np.random.default_rng(0).integers(0, 65536, (12, 10, 3), dtype=np.uint16)
    write_png16(tmp_path / "colour16.png", pixels)
    grey = (np.arange(120, dtype=np.uint16).reshape(12, 10) * 500)
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    _, (left, right) = plt.subplots(1, 2)
    ax = plot_anomaly_map(str(tmp_path / "colour16.png"), np.zeros((12, 10)), ax=left)
    np.testing.assert_array_equal(ax.images[0].get_array(), pixels / np.float32(65535))
    ax = plot_anomaly_map(str(tmp_path / "grey16.png"), np.zeros((12, 10)), ax=right)
    np.testing.assert_array_equal(ax.images[0].get_array()[..., 0], grey / np.float32(65535))
