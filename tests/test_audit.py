"""The training-set audit: audit_training_set and ``skpatch audit``."""

import csv
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone

import skpatch
from skpatch import SoftPatchClassifier, SoftPatchSegmenter, audit_training_set
from skpatch._audit import _held_out_maps, _write_html
from skpatch._cli import EXIT_ERROR, EXIT_USAGE, main
from skpatch.datasets import make_defects

N_IMAGES, N_DEFECTIVE, N_SHOW = 20, 4, 5
# A folder name that HTML must escape.
FOLDER = "lot <b>&'7'"
SMALL = ["--image-size", "64", "-q"]


def _classifier():
    return SoftPatchClassifier(random_state=0).set_params(featurizer__image_size=64)


@pytest.fixture(scope="module")
def data():
    X, y, _ = make_defects(N_IMAGES, image_size=64, defect_ratio=N_DEFECTIVE / N_IMAGES, random_state=0)
    assert y.sum() == N_DEFECTIVE
    return X, y


@pytest.fixture(scope="module")
def train_folder(data, tmp_path_factory):
    """The images as PNG files in a folder whose name needs escaping in HTML."""
    folder = tmp_path_factory.mktemp("train") / FOLDER
    folder.mkdir()
    for i, image in enumerate(data[0]):
        Image.fromarray(image).save(folder / f"img_{i:02d}.png")
    return folder


def _paths(folder):
    return sorted(str(p) for p in folder.glob("*.png"))


@pytest.fixture(scope="module")
def audit(train_folder, tmp_path_factory):
    output = tmp_path_factory.mktemp("audit")
    return audit_training_set(_paths(train_folder), _classifier(), output=output, n_show=N_SHOW)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# -- audit_training_set ---------------------------------------------------------


def test_injected_defective_images_rank_first(audit, data):
    _, y = data
    assert set(audit.ranking[:N_DEFECTIVE]) == set(np.flatnonzero(y))
    assert np.all(np.diff(audit.anomaly_scores[audit.ranking]) <= 0)


def test_flagged_is_fit_predict(audit, train_folder):
    estimator = audit.estimator
    np.testing.assert_array_equal(audit.flagged, estimator.train_scores_ < estimator.offset_)
    np.testing.assert_array_equal(audit.anomaly_scores, -estimator.train_scores_)
    assert audit.threshold == -estimator.offset_ and audit.n_flagged == audit.flagged.sum() > 0
    # The audit fits a clone; fit_predict of the same settings flags the same images.
    labels = _classifier().fit_predict(_paths(train_folder))
    np.testing.assert_array_equal(audit.flagged, labels == -1)


def test_estimate_says_where_it_comes_from(audit):
    fraction = getattr(audit.estimator, "contamination_estimate_", None)
    if fraction is None:
        assert audit.estimate_source == "flagged" and audit.n_defective_estimate == audit.n_flagged
    else:
        assert audit.estimate_source == "contamination_estimate_"
        assert audit.n_defective_estimate == pytest.approx(fraction * N_IMAGES)


def test_csv_lists_every_image_once_by_rank(audit, train_folder):
    rows = _rows(audit.files["csv"])
    assert list(rows[0]) == ["rank", "index", "path", "anomaly_score", "flagged"]
    assert [int(r["rank"]) for r in rows] == list(range(1, N_IMAGES + 1))
    assert sorted(int(r["index"]) for r in rows) == list(range(N_IMAGES))
    scores = [float(r["anomaly_score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    paths = _paths(train_folder)
    for row in rows:
        index = int(row["index"])
        assert row["path"] == paths[index]
        assert float(row["anomaly_score"]) == audit.anomaly_scores[index]
        assert row["flagged"] == str(int(audit.flagged[index]))


def test_html_is_self_contained_with_escaped_paths(audit):
    page = open(audit.files["html"], encoding="utf-8").read()
    assert page.count('alt="anomaly map of') == N_SHOW
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 2 * N_SHOW + 1  # image and map per card, the histogram
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert "<link" not in page and "<script" not in page and "url(" not in page
    assert FOLDER not in page and "lot &lt;b&gt;&amp;&#x27;7&#x27;" in page
    assert f"#{N_SHOW} &middot;" in page and f"#{N_SHOW + 1} &middot;" not in page


def test_overlays_are_held_out_maps_of_the_training_images(audit, train_folder):
    shown = audit.ranking[:N_SHOW]
    paths = _paths(train_folder)
    maps = _held_out_maps(audit.estimator, [paths[i] for i in shown], shown)
    assert maps.shape == (N_SHOW, *audit.estimator.pipeline_[0].feature_shape_)
    # The largest patch of each map is the image's leave-one-image-out score
    # (an in-sample map, scored against the image's own memory patches, is not).
    np.testing.assert_allclose(maps.reshape(N_SHOW, -1).max(axis=1), audit.anomaly_scores[shown], rtol=1e-4)


def test_page_without_matplotlib_says_so(audit, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    path = _write_html(audit, [], np.array([], dtype=int), str(tmp_path / "audit.html"))
    page = open(path, encoding="utf-8").read()
    assert "matplotlib is not installed" in page and "data:image/png" not in page


def test_arrays_and_contamination_estimate(data):
    class Estimating(SoftPatchClassifier):
        def fit(self, X, y=None):
            super().fit(X)
            self.contamination_estimate_ = 0.25
            return self

    X, y = data
    estimator = Estimating(random_state=0).set_params(featurizer__image_size=64)
    result = audit_training_set(X, estimator)
    assert result.estimate_source == "contamination_estimate_"
    assert result.n_defective_estimate == 0.25 * N_IMAGES
    assert result.paths == [""] * N_IMAGES and result.files == {}
    assert not hasattr(estimator, "pipeline_")  # a clone was fitted
    assert set(result.ranking[:N_DEFECTIVE]) == set(np.flatnonzero(y))


def test_refuses_what_is_not_a_classifier(data):
    with pytest.raises(TypeError, match="needs a SoftPatchClassifier.*SoftPatchSegmenter"):
        audit_training_set(data[0], SoftPatchSegmenter())
    with pytest.raises(ValueError, match="n_show"):
        audit_training_set(data[0], n_show=-1)


# -- skpatch audit --------------------------------------------------------------


def _flagged_paths(csv_path):
    return [row["path"] for row in _rows(csv_path) if row["flagged"] == "1"]


def test_cli_list_prints_the_flagged_paths(train_folder, data, tmp_path, capsys):
    out, model = tmp_path / "out", tmp_path / "out" / "m.skpatch"
    args = ["audit", str(train_folder), "--out", str(out), "--list", "--contamination", "0.2",
            "--n-show", "3", "-o", str(model), *SMALL]
    assert main(args) == 0
    captured = capsys.readouterr()
    listed = captured.out.splitlines()
    # contamination=0.2 flags 4 of the 20 images: here the 4 defective ones.
    paths = _paths(train_folder)
    assert listed == _flagged_paths(out / "audit.csv")
    assert set(listed) == {paths[i] for i in np.flatnonzero(data[1])}
    assert captured.err == ""  # -q
    page = (out / "audit.html").read_text(encoding="utf-8")
    assert page.count('alt="anomaly map of') == 3
    loaded = skpatch.load(model)
    assert loaded.n_train_images_ == N_IMAGES and loaded.contamination == 0.2


def test_cli_summary_goes_to_stdout_without_list(train_folder, tmp_path, capsys):
    assert main(["audit", str(train_folder), "--out", str(tmp_path), "--n-show", "0", *SMALL]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"training images\s+{N_IMAGES}\n", out)
    assert "estimated defective" in out and str(tmp_path / "audit.html") in out


def test_cli_move_to_moves_exactly_the_flagged_files(train_folder, tmp_path, capsys):
    train = tmp_path / "train"
    shutil.copytree(train_folder, train)
    target = tmp_path / "rejected"
    args = ["audit", str(train), "--out", str(tmp_path / "out"), "--move-to", str(target), "--n-show", "0", *SMALL]
    assert main([a for a in args if a != "-q"]) == 0
    flagged = _flagged_paths(tmp_path / "out" / "audit.csv")
    names = sorted(os.path.basename(p) for p in flagged)
    assert names and sorted(os.listdir(target)) == names
    assert len(os.listdir(train)) == N_IMAGES - len(names)
    assert all(not os.path.exists(p) for p in flagged)
    assert capsys.readouterr().err.count("moved ") == len(names) + 1

    # Put them back: the next audit flags the same files, whose names are taken.
    for name in names:
        shutil.copy(target / name, train / name)
    assert main(args) == EXIT_ERROR
    assert "already exists; nothing was moved" in capsys.readouterr().err
    assert len(os.listdir(train)) == N_IMAGES


def test_cli_move_to_inside_a_train_folder_is_refused(train_folder, tmp_path, capsys):
    target = train_folder / "rejected"
    args = ["audit", str(train_folder), "--out", str(tmp_path), "--move-to", str(target), *SMALL]
    assert main(args) == EXIT_USAGE
    assert "inside the training folder" in capsys.readouterr().err
    assert not target.exists() and not (tmp_path / "audit.csv").exists()  # refused before fitting


# -- the page in a browser --------------------------------------------------------


def _chromium():
    return next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)


@pytest.mark.slow
def test_html_renders_in_a_headless_browser(audit, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary (apt-get install chromium)")
    shot = tmp_path / "audit.png"
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
               "--window-size=1280,2000", "file://" + os.path.abspath(audit.files["html"])]
    subprocess.run(command, capture_output=True, timeout=120, check=False, cwd=tmp_path)
    assert shot.exists()
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2000, 1280)
    assert pixels.std() > 20  # text, histogram and images, not a blank page
    # The cards' images are drawn: the grid region is far from white.
    assert pixels[1000:].mean() < 230
