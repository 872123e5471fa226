"""The ``cache=`` folder survives corruption, concurrency and interruption.

The estimators cache the CNN features (``fit_transform_step``,
``transform_step``) and the discriminator's raw scores
(``_cached_raw_score``) with :class:`joblib.Memory`. These tests check, with
the installed joblib rather than by assumption, that a damaged entry is
recomputed, that two processes filling one key are safe, and that an
interrupted fit leaves nothing a later fit would take for a result. joblib
(1.6 here) writes each file of an entry (``output.pkl``, ``metadata.json``,
``func_code.py``) under a temporary name and renames it, and takes an entry
as present when its ``output.pkl`` exists; a result that fails to load is
logged and recomputed.

What no test here can cover: joblib keeps no checksum, so a corruption that
still unpickles (a flipped bit in an array's data) would be read as a result.
"""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from skpatch import PatchFeaturizer, SoftPatchClassifier
from skpatch.datasets import make_defects

CACHED_FUNCTIONS = ("fit_transform_step", "transform_step", "_cached_raw_score")

# One definition of the tiny model, shared with the subprocesses below.
MODEL_SOURCE = """
import numpy as np
from skpatch import SoftPatchClassifier
from skpatch.datasets import make_defects


def model(cache=None):
    return SoftPatchClassifier(random_state=0, device="cpu", cache=cache).set_params(
        featurizer__image_size=32, featurizer__embed_dim=16, featurizer__batch_size=4,
        denoise__n_neighbors=3,
    )


def data():
    X, _, _ = make_defects(12, image_size=32, kind="object", defect_ratio=0.25, random_state=0)
    return X[:8], X[8:]
"""
_namespace = {}
exec(MODEL_SOURCE, _namespace)
model, data = _namespace["model"], _namespace["data"]


@pytest.fixture(scope="module")
def reference():
    """Scores of the uncached model."""
    train, test = data()
    return model().fit(train).score_samples(test)


@pytest.fixture(scope="module")
def filled_cache(tmp_path_factory):
    """A cache folder after one fit and one scoring."""
    folder = tmp_path_factory.mktemp("filled") / "cache"
    train, test = data()
    model(str(folder)).fit(train).score_samples(test)
    return folder


@pytest.fixture
def count_cnn(monkeypatch):
    """Number of PatchFeaturizer.transform calls (the CNN) so far."""
    calls = {"n": 0}
    original = PatchFeaturizer.transform

    def counting(self, X):
        calls["n"] += 1
        return original(self, X)

    monkeypatch.setattr(PatchFeaturizer, "transform", counting)
    return calls


def _entries(folder, name="output.pkl"):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(name))


def _temporary_files(folder):
    # joblib writes "<file>.<uuid>-<pid>-<thread>" and renames it.
    return sorted(str(p) for p in folder.rglob("*") if p.is_file() and "-" in p.suffix)


def _fit_and_score(folder):
    train, test = data()
    return model(str(folder)).fit(train).score_samples(test)


def test_filled_cache_holds_every_cached_function(filled_cache):
    entries = _entries(filled_cache)
    for name in CACHED_FUNCTIONS:
        assert sum(f"/{name}/" in entry for entry in entries) == 1, entries
    assert not _temporary_files(filled_cache)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupted_entries_are_recomputed(damage, filled_cache, reference, count_cnn, tmp_path):
    folder = tmp_path / "cache"
    shutil.copytree(filled_cache, folder)
    rng = np.random.default_rng(0)
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        content = path.read_bytes()
        if damage == "truncated" and path.name == "output.pkl":
            path.write_bytes(content[: len(content) // 2])  # a partial entry
        elif damage == "garbage":  # every file: results, metadata and code
            path.write_bytes(rng.integers(0, 256, len(content), dtype=np.uint8).tobytes())
    np.testing.assert_array_equal(_fit_and_score(folder), reference)
    assert count_cnn["n"] == 2  # fit and scoring both recomputed the features
    # The recomputed entries replaced the damaged ones: the next fit reads them.
    np.testing.assert_array_equal(_fit_and_score(folder), reference)
    assert count_cnn["n"] == 2


WORKER = """
import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(int(sys.argv[3]))
{model}
go = Path(sys.argv[2])
while not go.exists():  # start fitting together with the other process
    time.sleep(0.01)
train, test = data()
np.save(sys.argv[4], model(sys.argv[1]).fit(train).score_samples(test))
"""


def _python(script, *args, **kwargs):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=env, **kwargs)


def test_two_processes_filling_one_key(tmp_path, reference, count_cnn):
    folder, go = tmp_path / "cache", tmp_path / "go"
    script = WORKER.format(model=MODEL_SOURCE)
    threads = torch.get_num_threads()
    workers = [
        _python(script, folder, go, threads, tmp_path / f"scores{i}.npy", stderr=subprocess.PIPE)
        for i in range(2)
    ]
    go.touch()
    for worker in workers:
        _, stderr = worker.communicate(timeout=240)
        assert worker.returncode == 0, stderr.decode()
    a, b = (np.load(tmp_path / f"scores{i}.npy") for i in range(2))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, reference)
    entries = _entries(folder)
    assert len(entries) == len(CACHED_FUNCTIONS), entries
    assert not _temporary_files(folder)  # each write was renamed into place
    # A third fit uses what they left: no CNN pass, the same scores.
    np.testing.assert_array_equal(_fit_and_score(folder), reference)
    assert count_cnn["n"] == 0


class Interrupted(Exception):
    """Stands for Ctrl-C or any error in the middle of the feature computation."""


def test_fit_raising_midway_leaves_no_entry(tmp_path, reference, monkeypatch):
    folder = tmp_path / "cache"
    original = PatchFeaturizer._embed
    batches = {"n": 0}

    def failing_on_second_batch(self, batch, net):
        batches["n"] += 1
        if batches["n"] == 2:
            raise Interrupted("between two batches")
        return original(self, batch, net)

    monkeypatch.setattr(PatchFeaturizer, "_embed", failing_on_second_batch)
    train, _ = data()
    with pytest.raises(Interrupted):
        model(str(folder)).fit(train)
    assert batches["n"] == 2  # the features of the first batch were computed
    assert not _entries(folder) and not _temporary_files(folder)
    monkeypatch.undo()
    np.testing.assert_array_equal(_fit_and_score(folder), reference)


KILLED_WORKER = """
import io
import os
import sys
import time
from pathlib import Path

import joblib.numpy_pickle
import torch

torch.set_num_threads(int(sys.argv[3]))
{model}
dump = joblib.numpy_pickle.dump


def half_then_hang(value, f, **kwargs):
    # Write half of the real pickle, then wait to be killed.
    buffer = io.BytesIO()
    dump(value, buffer, **kwargs)
    data_ = buffer.getvalue()
    f.write(data_[: len(data_) // 2])
    f.flush()
    os.fsync(f.fileno())
    Path(sys.argv[2]).touch()
    time.sleep(600)


joblib.numpy_pickle.dump = half_then_hang
train, test = data()
model(sys.argv[1]).fit(train)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_process_killed_while_writing_leaves_no_entry(tmp_path, reference):
    folder, writing = tmp_path / "cache", tmp_path / "writing"
    worker = _python(KILLED_WORKER.format(model=MODEL_SOURCE), folder, writing, torch.get_num_threads(),
                     stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not writing.exists():
            assert worker.poll() is None, worker.communicate()[1].decode()
            assert time.monotonic() < deadline, "the worker never started writing"
            time.sleep(0.05)
    finally:
        worker.kill()
        worker.communicate()
    # Half a pickle was written, under a temporary name only.
    assert _temporary_files(folder) and not _entries(folder)
    np.testing.assert_array_equal(_fit_and_score(folder), reference)
    assert any("/fit_transform_step/" in entry for entry in _entries(folder))
