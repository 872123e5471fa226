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
    EXIT_INTERRUPTED,
    EXIT_MISSING_DEPENDENCY,
    EXIT_MODEL_FILE,
    EXIT_SKIPPED,
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


def test_fit_bagged_memory_options(mvtec, tmp_path):
    path = str(tmp_path / "bag.skpatch")
    args = ["fit", str(mvtec / "train" / "good"), "-o", path, *SMALL, "--n-estimators", "4", "--max-samples", "0.25"]
    assert main([*args, "--bank-dtype", "float16"]) == 0
    memory = skpatch.load(path).named_steps["coreset"]
    assert isinstance(memory, skpatch.BaggedCoreset) and len(memory.estimators_) == 4
    assert memory.max_samples == 0.25
    # One bank for a segmenter, whose default memory is bagged.
    assert main(["fit", str(mvtec / "train" / "good"), "-o", path, *SMALL, "--segment", "--n-estimators", "1"]) == 0
    assert isinstance(skpatch.load(path).named_steps["coreset"], skpatch.WeightedCoreset)
    code = main(["fit", str(mvtec / "train" / "good"), "-o", path, *SMALL, "--n-estimators", "1", "--max-samples", "0.5"])
    assert code == 2


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


# -- unreadable files, atomic writes, --resume (issue #29) -----------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def reference_scores(models, mvtec):
    """``-score_samples`` of the classifier on each test image, by path."""
    paths = _test_paths(mvtec)
    return dict(zip(paths, -skpatch.load(models["clf"]).score_samples(paths).astype(np.float64)))


def _truncated_png(source):
    data = open(source, "rb").read()
    assert data.startswith(PNG_SIGNATURE)
    return data[: len(data) // 2]


def _folder_with_bad_files(mvtec, folder, bad, n_good=6):
    """``n_good`` test images copied to ``folder`` as 00.png, 01.png, ..., with
    ``bad[position] = bytes`` written at those positions in the sorted order.

    Returns the copies (path -> source) and the bad files' paths, in order.
    """
    folder.mkdir()
    sources = iter(_test_paths(mvtec)[:n_good])
    copies, bad_paths = {}, []
    for i in range(n_good + len(bad)):
        path = str(folder / f"{i:02d}.png")
        if i in bad:
            open(path, "wb").write(bad[i])
            bad_paths.append(path)
        else:
            copies[path] = next(sources)
            open(path, "wb").write(open(copies[path], "rb").read())
    return copies, bad_paths


@pytest.mark.parametrize("policy", ["stop", "skip"])
@pytest.mark.parametrize(
    "position, workers",
    [(0, 2), (2, 0), (6, 2)],
    ids=["first-of-first-batch", "middle-of-first-batch", "last-in-last-batch"],
)
def test_score_corrupt_file_stop_and_skip(models, mvtec, reference_scores, tmp_path, capsys, position, workers, policy):
    """6 readable PNGs and a truncated one; --batch-size 4, so that the bad file
    has images before and/or after it in its batch."""
    bad_file = {position: _truncated_png(_test_paths(mvtec)[0])}
    copies, (bad,) = _folder_with_bad_files(mvtec, tmp_path / "in", bad_file)
    out = tmp_path / "r"
    code = main([
        "score", models["clf"], str(tmp_path / "in"), "--out", str(out), "--batch-size", "4",
        "--workers", str(workers), "--on-error", policy, "-q",
    ])
    err = capsys.readouterr().err
    good = list(copies)  # in input order
    expected = good[:position] if policy == "stop" else good
    rows = _rows(out / "scores.csv")
    assert [row["path"] for row in rows] == expected
    assert [float(row["anomaly_score"]) for row in rows] == [reference_scores[copies[p]] for p in expected]
    errors = _rows(out / "errors.csv")
    assert [e["path"] for e in errors] == [bad] and errors[0]["reason"].startswith("Cannot read the file: ")
    # Written whole: no temporary file is left beside them.
    assert sorted(os.listdir(out)) == ["errors.csv", "scores.csv"]
    if policy == "stop":
        assert code == EXIT_ERROR and err.count("\n") == 1
        assert err.startswith(f"skpatch score: error: {bad!r}: Cannot read the file: ")
        assert f"{out / 'scores.csv'} is partial: it holds {position} rows" in err
        assert "--resume --on-error skip" in err
    else:
        assert code == EXIT_SKIPPED
        assert err == f"skpatch score: skipped 1 unreadable file of 7 (listed in {out / 'errors.csv'})\n"


def test_score_skip_without_out_lists_each_file_on_stderr(models, mvtec, reference_scores, tmp_path, capsys):
    """A truncated PNG, a 3x3 image and a text file named .png in one batch of 9:
    each is named with its reason, and the six images around them are scored."""
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(tiny)
    bad = {1: _truncated_png(_test_paths(mvtec)[0]), 4: tiny.read_bytes(), 5: b"not an image"}
    copies, bad_paths = _folder_with_bad_files(mvtec, tmp_path / "in", bad)
    code = main(["score", models["clf"], str(tmp_path / "in"), "--batch-size", "9", "--on-error", "skip", "-q"])
    captured = capsys.readouterr()
    assert code == EXIT_SKIPPED
    rows = list(csv.DictReader(captured.out.splitlines()))
    assert [row["path"] for row in rows] == list(copies)
    assert [float(row["anomaly_score"]) for row in rows] == [reference_scores[s] for s in copies.values()]
    lines = captured.err.splitlines()
    assert len(lines) == 4
    for line, path, reason in zip(lines, bad_paths, ["Cannot read the file: ", "the image is 3x3 (HxW)", "Cannot read the file: "]):
        assert line.startswith(f"skpatch score: skipped {path!r}: {reason}")
    assert lines[3] == "skpatch score: skipped 3 unreadable files of 9 (listed above)"
    # The default, stop: the rows before the first bad file, then one error line.
    assert main(["score", models["clf"], str(tmp_path / "in"), "--batch-size", "9", "-q"]) == EXIT_ERROR
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 2 and lines[1].startswith(list(copies)[0] + ",")
    assert captured.err.count("\n") == 1 and bad_paths[0] in captured.err
    assert "standard output holds the 1 rows scored before it" in captured.err


def test_score_replaces_the_csv_whole_at_each_block(models, mvtec, tmp_path, monkeypatch):
    copies, _ = _folder_with_bad_files(mvtec, tmp_path / "in", {}, n_good=7)
    out = tmp_path / "r"
    real_replace, seen = os.replace, []

    def replace(src, dst):
        if os.path.basename(dst) == "scores.csv":
            # The new version is complete before it takes the CSV's name.
            assert os.path.dirname(src) == os.path.dirname(dst)
            text = open(src, encoding="utf-8").read()
            assert text.endswith("\n")
            seen.append([row["path"] for row in csv.DictReader(text.splitlines())])
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert main(["score", models["clf"], str(tmp_path / "in"), "--out", str(out), "--batch-size", "2", "-q"]) == 0
    good = list(copies)
    assert seen == [good[:n] for n in (0, 2, 4, 6, 7)]
    assert sorted(os.listdir(out)) == ["errors.csv", "scores.csv"]
    assert _rows(out / "errors.csv") == []


def test_score_interrupted_keeps_whole_blocks_and_says_so(models, mvtec, tmp_path, monkeypatch, capsys):
    import skpatch._cli as cli

    _folder_with_bad_files(mvtec, tmp_path / "in", {}, n_good=7)
    calls, score_group = [], cli._score_group

    def interrupted_on_third_block(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return score_group(*args, **kwargs)

    monkeypatch.setattr(cli, "_score_group", interrupted_on_third_block)
    out = tmp_path / "r"
    code = main(["score", models["clf"], str(tmp_path / "in"), "--out", str(out), "--batch-size", "2", "-q"])
    assert code == EXIT_INTERRUPTED
    assert len(_rows(out / "scores.csv")) == 4
    assert capsys.readouterr().err.splitlines() == [
        f"skpatch score: {out / 'scores.csv'} is partial: it holds 4 rows; --resume continues the run",
        "skpatch score: interrupted",
    ]


def _env():
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(skpatch.__file__)), os.environ.get("PYTHONPATH", "")]),
    }


def test_score_killed_then_resumed_equals_an_uninterrupted_run(models, tmp_path):
    import signal
    import time

    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.RandomState(0)
    for i in range(32):
        Image.fromarray(rng.randint(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    out = tmp_path / "r"
    command = ["score", models["clf"], str(folder), "--out", str(out), "--batch-size", "2", "--device", "cpu", "-q"]
    process = subprocess.Popen([sys.executable, "-m", "skpatch", *command], env=_env(), stderr=subprocess.PIPE)
    try:
        deadline, rows = time.monotonic() + 120, []
        while len(rows) < 2:
            assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()!r}"
            assert time.monotonic() < deadline, "no rows after 120 s"
            time.sleep(0.005)
            if (out / "scores.csv").exists():
                rows = _rows(out / "scores.csv")
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        process.kill()
        process.wait(timeout=30)
        process.stderr.close()
    # What a kill at any moment leaves: a valid CSV of whole blocks of 2.
    rows = _rows(out / "scores.csv")
    assert 2 <= len(rows) < 32 and len(rows) % 2 == 0
    assert all(len(row) == 3 and None not in row.values() and float(row["anomaly_score"]) > 0 for row in rows)
    assert main([*command, "--resume"]) == 0
    # The uninterrupted run, in one block (scores do not depend on the batch).
    assert main(["score", models["clf"], str(folder), "--out", str(tmp_path / "full"), "--batch-size", "32", "--device", "cpu", "-q"]) == 0
    resumed, full = _rows(out / "scores.csv"), _rows(tmp_path / "full" / "scores.csv")
    assert resumed[: len(rows)] == rows  # kept, not rescored
    assert [r["path"] for r in resumed] == [r["path"] for r in full] == sorted(str(p) for p in folder.glob("*.png"))
    assert [r["label"] for r in resumed] == [r["label"] for r in full]
    np.testing.assert_allclose(
        [float(r["anomaly_score"]) for r in resumed], [float(r["anomaly_score"]) for r in full], rtol=1e-6
    )
    assert sorted(os.listdir(out)) == ["errors.csv", "scores.csv"]


def test_score_resume_refuses_other_columns_and_needs_out(models, mvtec, tmp_path, capsys):
    out = tmp_path / "r"
    paths = _test_paths(mvtec)[:3]
    assert main(["score", models["clf"], *paths, "--out", str(out), "-q"]) == 0
    before = (out / "scores.csv").read_bytes()
    # A segmenter writes two more columns: its rows cannot continue this CSV.
    assert main(["score", models["seg"], *paths, "--out", str(out), "--resume", "-q"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has the columns 'path,anomaly_score,label', not 'path,anomaly_score,label,defect_area_px" in err
    assert (out / "scores.csv").read_bytes() == before
    # All images scored already: nothing is scored again and the CSV is the same.
    assert main(["score", models["clf"], *paths, "--out", str(out), "--resume"]) == 0
    assert "resuming: 3 of the 3 images are in" in capsys.readouterr().err
    assert (out / "scores.csv").read_bytes() == before
    assert main(["score", models["clf"], *paths, "--resume"]) == EXIT_USAGE
    assert "--resume continues DIR/scores.csv: add --out DIR." in capsys.readouterr().err


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


def test_evaluate_needs_no_train_folder(models, mvtec, reference_scores, tmp_path, capsys):
    import shutil

    root = tmp_path / "test-only"
    shutil.copytree(mvtec, root, ignore=shutil.ignore_patterns("train", "ground_truth"))
    report = tmp_path / "e.json"
    assert main(["evaluate", models["clf"], str(root), "--json", str(report), "-q"]) == 0
    results = json.loads(report.read_text())
    paths = _test_paths(mvtec)
    labels = np.array(["spot" in p for p in paths], dtype=int)
    assert results["n_test_images"] == len(paths)
    assert results["image_auroc"] == image_auroc(labels, np.array([reference_scores[p] for p in paths]))
    # What it needs is test/: without it, one line naming it.
    shutil.rmtree(root / "test")
    assert main(["evaluate", models["clf"], str(root), "--json", str(report), "-q"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "'test' is missing" in err and "train/good" not in err and err.count("\n") == 1


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
