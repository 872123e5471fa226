"""The ``skpatch`` command line, through main(argv) and through a subprocess."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import skpatch
from skpatch import SoftPatchClassifier, SoftPatchSegmenter
from skpatch._cli import (
    EXIT_ERROR,
    EXIT_MISSING_DEPENDENCY,
    EXIT_MODEL_FILE,
    EXIT_USAGE,
    CommandError,
    collect_images,
    main,
)
from skpatch.metrics import image_auroc

from .conftest import BOTTLE

SMALL = ["--image-size", "64", "--set", "featurizer__embed_dim=64", "--set", "denoise__n_neighbors=4", "-q"]


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory):
    """A tiny MVTec AD-layout folder of generated images, with masks."""
    from skpatch.datasets import make_defects

    root = tmp_path_factory.mktemp("data") / "toy"
    X, y, masks = make_defects(30, image_size=64, kind="object", defect_ratio=0.4, random_state=0)
    good = np.flatnonzero(y == 0)
    for i in good[:12]:
        _save(root / "train" / "good" / f"{i:03d}.png", X[i])
    for i in list(good[12:]) + list(np.flatnonzero(y == 1)):
        kind = "good" if y[i] == 0 else "spot"
        _save(root / "test" / kind / f"{i:03d}.png", X[i])
        if y[i]:
            _save(root / "ground_truth" / kind / f"{i:03d}_mask.png", masks[i].astype(np.uint8) * 255)
    return root


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="module")
def models(mvtec, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name, extra in (("clf", []), ("seg", ["--segment"])):
        paths[name] = str(folder / f"{name}.skpatch")
        assert main(["fit", str(mvtec / "train" / "good"), "-o", paths[name], *SMALL, *extra]) == 0
    return paths


def _test_paths(mvtec):
    return sorted(str(p) for p in (mvtec / "test").rglob("*.png"))


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# -- fit ------------------------------------------------------------------------


def test_fit_writes_a_model_equal_to_the_python_api(models, mvtec):
    train = sorted(str(p) for p in (mvtec / "train" / "good").glob("*.png"))
    loaded = skpatch.load(models["clf"])
    assert isinstance(loaded, SoftPatchClassifier) and loaded.n_train_images_ == len(train)
    est = SoftPatchClassifier(random_state=0).set_params(
        featurizer__image_size=64, featurizer__embed_dim=64, denoise__n_neighbors=4
    ).fit(train)
    X = _test_paths(mvtec)
    np.testing.assert_array_equal(loaded.score_samples(X), est.score_samples(X))
    assert isinstance(skpatch.load(models["seg"]), SoftPatchSegmenter)
    assert loaded.verbose == 0 and loaded.named_steps["featurizer"].verbose == 0


def test_fit_options_reach_the_estimator(mvtec, tmp_path):
    path = str(tmp_path / "m.skpatch")
    code = main([
        "fit", str(mvtec / "train" / "good"), "-o", path, *SMALL, "--threshold", "0.2",
        "--method", "gaussian", "--sampling-ratio", "0.05", "--contamination", "0.1",
        "--seed", "3", "--device", "cpu", "--bank-dtype", "float16", "--set", "memory__search=brute",
    ])
    assert code == 0
    est = skpatch.load(path)
    params = est.get_params()
    assert params["denoise__threshold"] == 0.2 and params["denoise__method"] == "gaussian"
    assert params["memory__sampling_ratio"] == 0.05 and params["memory__search"] == "brute"
    assert est.contamination == 0.1 and est.random_state == 3 and est.device == "cpu"
    assert est.named_steps["coreset"].device == "cpu"


def test_fit_bad_parameter_is_one_line(mvtec, tmp_path, capsys):
    code = main(["fit", str(mvtec / "train" / "good"), "-o", str(tmp_path / "m"), "--set", "denoise__lof_k=3", "-q"])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR
    assert err.startswith("skpatch fit: error: ") and "lof_k" in err and err.count("\n") == 1
    assert "Traceback" not in err and not (tmp_path / "m").exists()
    # An output folder that does not exist is reported before the fit.
    code = main(["fit", str(mvtec / "train" / "good"), "-o", str(tmp_path / "no" / "m.skpatch"), "-q"])
    assert code == EXIT_ERROR and "does not exist" in capsys.readouterr().err


# -- score ----------------------------------------------------------------------


def test_score_csv_matches_the_estimator(models, mvtec, tmp_path):
    out = tmp_path / "r"
    assert main(["score", models["clf"], str(mvtec / "test"), "--out", str(out), "--batch-size", "4", "-q"]) == 0
    rows = _rows(out / "scores.csv")
    paths = _test_paths(mvtec)
    assert [row["path"] for row in rows] == paths
    assert list(rows[0]) == ["path", "anomaly_score", "label"]
    est = skpatch.load(models["clf"])
    scores = np.array([float(row["anomaly_score"]) for row in rows])
    np.testing.assert_array_equal(scores, -est.score_samples(paths).astype(np.float64))
    labels = np.where([row["label"] == "anomalous" for row in rows], -1, 1)
    np.testing.assert_array_equal(labels, est.predict(paths))


def test_score_segmenter_writes_maps_overlays_masks(models, mvtec, tmp_path):
    out = tmp_path / "r"
    code = main([
        "score", models["seg"], str(mvtec / "test"), "--out", str(out), "--maps", "--map-format", "npy",
        "--overlays", "--masks", "--batch-size", "5", "--workers", "3", "-q",
    ])
    assert code == 0
    rows = _rows(out / "scores.csv")
    assert list(rows[0]) == ["path", "anomaly_score", "label", "defect_area_px", "defect_area_fraction"]
    paths = [row["path"] for row in rows]
    est = skpatch.load(models["seg"])
    maps, masks = est.anomaly_maps(paths), est.predict(paths)
    for row, amap, mask in zip(rows, maps, masks):
        name = os.path.relpath(row["path"], mvtec / "test")[: -len(".png")]
        np.testing.assert_array_equal(np.load(out / "maps" / f"{name}.npy"), amap)
        written = np.asarray(Image.open(out / "masks" / f"{name}.png"))
        np.testing.assert_array_equal(written == 255, mask)
        assert int(row["defect_area_px"]) == mask.sum()
        assert float(row["anomaly_score"]) == float(amap.max())
        assert (row["label"] == "anomalous") == bool(mask.any())
        with Image.open(out / "overlays" / f"{name}.png") as overlay:
            assert overlay.size[0] >= 64
    # Defective test images get the larger defect areas.
    area = {row["path"]: float(row["defect_area_fraction"]) for row in rows}
    assert np.mean([a for p, a in area.items() if "spot" in p]) > np.mean([a for p, a in area.items() if "good" in p])


def test_score_classifier_maps_and_masks_follow_its_threshold(models, mvtec, tmp_path):
    out = tmp_path / "r"
    assert main(["score", models["clf"], str(mvtec / "test" / "spot"), "--out", str(out), "--maps", "--masks", "-q"]) == 0
    est = skpatch.load(models["clf"])
    threshold = -est.offset_
    for row in _rows(out / "scores.csv"):
        stem = os.path.basename(row["path"])
        png = np.asarray(Image.open(out / "maps" / stem)).astype(float)
        mask = np.asarray(Image.open(out / "masks" / stem)) == 255
        assert png.shape == mask.shape == (64, 64)
        # 8-bit maps: 128 is the threshold, and the mask is the map above it.
        assert np.all(png[mask] >= 127) and np.all(png[~mask] <= 128)


def test_score_json_lines_and_csv_on_stdout(models, mvtec, capsys):
    paths = _test_paths(mvtec)[:5]
    assert main(["score", models["clf"], *paths, "--format", "json", "-q"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in records] == paths and {"anomaly_score", "label"} <= set(records[0])
    assert main(["score", models["clf"], *paths, "-q"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "path,anomaly_score,label" and len(out) == 6
    assert [float(line.split(",")[1]) for line in out[1:]] == [r["anomaly_score"] for r in records]


def test_score_images_of_several_sizes_in_one_batch(models, mvtec, tmp_path):
    paths = _test_paths(mvtec)[:4]
    big = tmp_path / "big.png"
    Image.open(paths[0]).resize((96, 80)).save(big)
    mixed = [paths[0], str(big), paths[1], paths[2]]
    out = tmp_path / "r"
    assert main(["score", models["seg"], *mixed, "--out", str(out), "--maps", "--map-format", "npy", "-q"]) == 0
    rows = _rows(out / "scores.csv")
    assert [r["path"] for r in rows] == mixed
    assert np.load(out / "maps" / "big.npy").shape == (80, 96)
    est = skpatch.load(models["seg"])
    assert float(rows[1]["anomaly_score"]) == float(est.anomaly_maps([str(big)]).max())


def test_score_progress_goes_to_stderr(models, mvtec, capsys):
    assert main(["score", models["clf"], str(mvtec / "test" / "good"), "--progress"]) == 0
    captured = capsys.readouterr()
    assert "score" in captured.err and "img" in captured.err and "images/s" in captured.err
    assert "img/s" not in captured.out and captured.out.startswith("path,")
    assert main(["score", models["clf"], str(mvtec / "test" / "good"), "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_score_usage_errors(models, mvtec, capsys):
    assert main(["score", models["clf"], str(mvtec / "test"), "--overlays"]) == EXIT_USAGE
    assert "--out" in capsys.readouterr().err
    assert main(["score", models["clf"]]) == EXIT_USAGE
    assert main(["score", models["clf"], str(mvtec / "nothing-here")]) == EXIT_ERROR
    assert "no such file or folder" in capsys.readouterr().err


def test_overlays_without_matplotlib_say_what_to_install(models, mvtec, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code = main(["score", models["clf"], str(mvtec / "test"), "--out", str(tmp_path), "--overlays"])
    assert code == EXIT_MISSING_DEPENDENCY
    assert "pip install 'skpatch[plot]'" in capsys.readouterr().err


def test_unreadable_image_is_one_line(models, tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert main(["score", models["clf"], str(tmp_path / "bad.png")]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "bad.png" in err and err.count("\n") == 1


# -- model file errors ----------------------------------------------------------


def test_missing_and_tampered_models_exit_3(models, mvtec, tmp_path, capsys):
    assert main(["score", str(tmp_path / "none.skpatch"), str(mvtec / "test")]) == EXIT_MODEL_FILE
    assert "does not exist" in capsys.readouterr().err
    tampered = tmp_path / "t.skpatch"
    data = bytearray(open(models["clf"], "rb").read())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    assert main(["inspect", str(tampered)]) == EXIT_MODEL_FILE
    err = capsys.readouterr().err
    assert err.startswith("skpatch inspect: error: ") and err.count("\n") == 1
    assert main(["inspect", str(tampered), "--debug"]) == EXIT_MODEL_FILE
    assert "Traceback" in capsys.readouterr().err
    # A damaged zip directory: zipfile's NotImplementedError is a refused file too (#10).
    data = bytearray(open(models["clf"], "rb").read())
    directory = int.from_bytes(data[data.rfind(b"PK\x05\x06") + 16 :][:4], "little")
    data[directory + 6] = 0xFF  # "version needed to extract": 25.5
    tampered.write_bytes(bytes(data))
    assert main(["inspect", str(tampered)]) == EXIT_MODEL_FILE
    err = capsys.readouterr().err
    assert "zip file version" in err and err.count("\n") == 1


# -- evaluate and inspect -------------------------------------------------------


def test_evaluate_prints_a_table_and_writes_json(models, mvtec, tmp_path, capsys):
    report = tmp_path / "eval.json"
    assert main(["evaluate", models["seg"], str(mvtec), "--json", str(report), "-q"]) == 0
    table = capsys.readouterr().out
    results = json.loads(report.read_text())
    for key in ("image_auroc", "pixel_auroc", "aupro", "image_f1_max"):
        assert 0.5 < results[key] <= 1.0, key
    assert f"{results['image_auroc']:.4f}" in table and "pixel AUROC" in table and "AUPRO" in table
    est = skpatch.load(models["seg"])
    paths = _test_paths(mvtec)
    labels = np.array(["spot" in p for p in paths], dtype=int)
    expected = image_auroc(labels, est.anomaly_maps(paths).reshape(len(paths), -1).max(1))
    assert results["image_auroc"] == pytest.approx(expected, abs=1e-12)
    assert set(results["image_auroc_per_defect_type"]) == {"spot"}


def test_evaluate_without_masks_reports_na(models, mvtec, tmp_path, capsys):
    import shutil

    root = tmp_path / "nomasks"
    shutil.copytree(mvtec, root, ignore=shutil.ignore_patterns("ground_truth"))
    assert main(["evaluate", models["clf"], str(root), "--json", str(tmp_path / "e.json"), "-q"]) == 0
    assert "n/a (no ground_truth masks)" in capsys.readouterr().out
    results = json.loads((tmp_path / "e.json").read_text())
    assert results["pixel_auroc"] is None and results["image_auroc"] > 0.5


def test_inspect_reports_what_is_inside(models, capsys):
    assert main(["inspect", models["clf"], "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    est = skpatch.load(models["clf"])
    assert info["estimator"] == "skpatch.SoftPatchClassifier"
    assert info["training_images"] == 12 and info["image_size"] == "64x64"
    assert info["removal_ratio"] == est.named_steps["denoise"].threshold == 0.15
    assert info["memory_bank"].startswith(f"{len(est.named_steps['coreset'].memory_bank_)} patches x 64 features")
    assert info["backbone"].startswith("tf_efficientnet_lite0 (embedded weights")
    assert info["featurizer"]["image_size"] == 64 and info["format_version"] == 1
    assert main(["inspect", models["seg"]]) == 0
    text = capsys.readouterr().out
    assert "removal_ratio" in text and "0.15" in text and "SoftPatchSegmenter" in text


def test_inspect_reads_a_fitted_threshold_when_there_is_one(models, tmp_path, capsys):
    est = skpatch.load(models["clf"])
    est.named_steps["denoise"].threshold_ = 0.07  # as a discriminator choosing its ratio would
    est.save(tmp_path / "m.skpatch")
    assert main(["inspect", str(tmp_path / "m.skpatch"), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["removal_ratio"] == 0.07


# -- export ---------------------------------------------------------------------

# tests/test_onnx.py's documented tolerance: scores within 1e-4 relative.
ONNX_RTOL = 1e-4


def _onnx_outputs(path, images):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"images": images})))


def _read_rgb(paths):
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def test_export_writes_a_graph_that_scores_as_the_model(models, mvtec, tmp_path, capsys):
    pytest.importorskip("onnx")
    paths = _test_paths(mvtec)
    images = _read_rgb(paths)
    path = str(tmp_path / "clf.onnx")
    assert main(["export", models["clf"], "-o", path]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"wrote {path}: SoftPatchClassifier; input images uint8 (n, 64, 64, 3)")
    est = skpatch.load(models["clf"])
    np.testing.assert_allclose(_onnx_outputs(path, images)["scores"], est.score_samples(paths), rtol=ONNX_RTOL)
    # --input-dtype float32: images in [0, 1]; a segmenter's maps.
    path = str(tmp_path / "seg.onnx")
    assert main(["export", models["seg"], "-o", path, "--input-dtype", "float32", "-q"]) == 0
    assert capsys.readouterr().err == ""
    out = _onnx_outputs(path, images.astype(np.float32) / 255)
    maps = skpatch.load(models["seg"]).score_samples(paths)
    np.testing.assert_allclose(out["maps"], maps, rtol=ONNX_RTOL, atol=ONNX_RTOL * np.abs(maps).max())


def test_export_refuses_missing_and_tampered_models(models, tmp_path, capsys):
    # Without onnx, export stops at the missing dependency before reading the model.
    pytest.importorskip("onnx")
    out = tmp_path / "m.onnx"
    assert main(["export", str(tmp_path / "none.skpatch"), "-o", str(out)]) == EXIT_MODEL_FILE
    err = capsys.readouterr().err
    assert err.startswith("skpatch export: error: ") and "does not exist" in err and err.count("\n") == 1
    tampered = tmp_path / "t.skpatch"
    data = bytearray(open(models["clf"], "rb").read())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    assert main(["export", str(tampered), "-o", str(out)]) == EXIT_MODEL_FILE
    err = capsys.readouterr().err
    assert err.startswith("skpatch export: error: ") and err.count("\n") == 1
    assert not out.exists()


def test_export_usage_errors_come_before_anything_else(models, tmp_path, capsys):
    """A missing output folder or a bad option is reported with or without onnx."""
    out = tmp_path / "m.onnx"
    assert main(["export", models["clf"], "-o", str(tmp_path / "no" / "m.onnx")]) == EXIT_ERROR
    assert "does not exist" in capsys.readouterr().err
    assert main(["export", models["clf"]]) == EXIT_USAGE  # no -o
    assert main(["export", models["clf"], "-o", str(out), "--input-dtype", "float64"]) == EXIT_USAGE
    assert not out.exists()


def test_export_of_an_approximate_search_warns_in_one_line(models, tmp_path, capsys):
    pytest.importorskip("onnx")
    est = skpatch.load(models["clf"])
    est.named_steps["coreset"].search = "ivf"  # the same inverted file, searched approximately
    est.save(tmp_path / "ivf.skpatch")
    assert main(["export", str(tmp_path / "ivf.skpatch"), "-o", str(tmp_path / "m.onnx")]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("skpatch export: warning: The memory step searches approximately")
    assert lines[1].startswith("wrote ")


def test_export_without_onnx_says_what_to_install(models, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    assert main(["export", models["clf"], "-o", str(tmp_path / "m.onnx")]) == EXIT_MISSING_DEPENDENCY
    err = capsys.readouterr().err
    assert "pip install 'skpatch[export]'" in err and err.count("\n") == 1
    assert not (tmp_path / "m.onnx").exists()


def test_export_subprocess(models, mvtec, tmp_path):
    pytest.importorskip("onnx")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(skpatch.__file__)), os.environ.get("PYTHONPATH", "")])}
    path = tmp_path / "m.onnx"
    result = subprocess.run(
        [sys.executable, "-m", "skpatch", "export", models["clf"], "-o", str(path)],
        capture_output=True, text=True, env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr.startswith(f"wrote {path}: ") and result.stderr.count("\n") == 1
    paths = _test_paths(mvtec)[:6]
    scores = _onnx_outputs(str(path), _read_rgb(paths))["scores"]
    np.testing.assert_allclose(scores, skpatch.load(models["clf"]).score_samples(paths), rtol=ONNX_RTOL)


# -- inputs ---------------------------------------------------------------------


def test_collect_images_from_folders_globs_and_lists(mvtec, tmp_path):
    test = mvtec / "test"
    items = collect_images([str(test)])
    assert [i.path for i in items] == _test_paths(mvtec)
    assert items[0].name == os.path.join("good", os.path.basename(items[0].path))
    globbed = collect_images([str(test / "*" / "*.png")])
    assert [i.name for i in globbed] == [i.name for i in items]
    listing = tmp_path / "list.txt"
    listing.write_text("# test images\n\n" + "\n".join(i.path for i in items[:3]) + "\n")
    assert [i.path for i in collect_images([str(listing)])] == [i.path for i in items[:3]]
    assert [i.path for i in collect_images(["@" + str(listing)])] == [i.path for i in items[:3]]
    # The same file twice is scored once; equal names get distinct outputs.
    twice = collect_images([items[0].path, str(test)])
    assert len(twice) == len(items)
    good, spot = sorted(test.glob("good/*.png"))[0], sorted(test.glob("spot/*.png"))[0]
    copy = tmp_path / good.name
    copy.write_bytes(good.read_bytes())
    names = [i.name for i in collect_images([str(good), str(copy)])]
    assert len(set(names)) == 2
    for bad in (str(tmp_path / "missing"), str(tmp_path / "*.jpg")):
        with pytest.raises(CommandError):
            collect_images([bad])


# -- entry points ---------------------------------------------------------------


def test_no_command_prints_help_and_exit_codes(capsys):
    assert main([]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "fit" in err and "score" in err and "exit codes" in err
    assert main(["--version"]) == 0
    assert skpatch.__version__ in capsys.readouterr().out
    assert main(["frobnicate"]) == EXIT_USAGE


def test_demo_runs_on_a_small_folder(mvtec, tmp_path, capsys):
    figure = tmp_path / "demo.png"
    assert main(["demo", "--data", str(mvtec), "--image-size", "64", "--output", str(figure), "-q"]) == 0
    out = capsys.readouterr().out
    assert "image AUROC" in out and figure.exists()


def test_python_m_skpatch_subprocess(models, mvtec, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(skpatch.__file__)), os.environ.get("PYTHONPATH", "")])}
    run = [sys.executable, "-m", "skpatch"]
    result = subprocess.run([*run, "--help"], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and "evaluate" in result.stdout
    out = tmp_path / "r"
    result = subprocess.run(
        [*run, "score", models["clf"], str(mvtec / "test" / "spot"), "--out", str(out), "--overlays"],
        capture_output=True, text=True, env=env,
    )
    assert result.returncode == 0, result.stderr
    # Not a terminal: no progress bar, one summary line on stderr, nothing on stdout.
    assert result.stdout == "" and "%|" not in result.stderr and "images/s" in result.stderr
    assert len(list((out / "overlays").glob("*.png"))) == len(_rows(out / "scores.csv")) > 0
    result = subprocess.run([*run, "inspect", str(tmp_path / "missing.skpatch")], capture_output=True, text=True, env=env)
    assert result.returncode == EXIT_MODEL_FILE
    assert result.stderr.startswith("skpatch inspect: error: ") and result.stderr.count("\n") == 1


@pytest.mark.data
@pytest.mark.slow
def test_bottle_fit_score_evaluate(tmp_path, capsys):
    """The issue's "done" commands on the MVTec AD bottle images."""
    if not os.path.isdir(BOTTLE):
        pytest.skip("MVTec AD bottle data not found")
    model = str(tmp_path / "m.skpatch")
    assert main(["fit", os.path.join(BOTTLE, "train", "good"), "-o", model, "-q"]) == 0
    out = tmp_path / "r"
    assert main(["score", model, os.path.join(BOTTLE, "test"), "--out", str(out), "--overlays", "-q"]) == 0
    rows = _rows(out / "scores.csv")
    assert len(list((out / "overlays").rglob("*.png"))) == len(rows) == 83
    assert main(["evaluate", model, BOTTLE, "--json", str(tmp_path / "e.json"), "-q"]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["image_auroc"] >= 0.98
