"""The lock around cache fills: concurrent callers compute a cache entry once."""

import threading
import time

import joblib

from skpatch._cache import cached_call
from skpatch._filelock import file_lock

CALLS = []


def _slow_square(key, value):
    CALLS.append(key)
    time.sleep(0.3)  # long enough for the other threads to ask meanwhile
    return value * value


def test_concurrent_callers_compute_once(tmp_path):
    memory = joblib.Memory(str(tmp_path), verbose=0)
    cached = memory.cache(_slow_square, ignore=["value"])
    CALLS.clear()
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cached_call(memory, cached, "k", value=3)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [9, 9, 9, 9] and CALLS == ["k"]
    # Another entry is computed (and locked) on its own; a hit takes no lock.
    assert cached_call(memory, cached, "other", value=2) == 4 and CALLS == ["k", "other"]
    assert cached_call(memory, cached, "k", value=3) == 9 and len(CALLS) == 2


def test_no_cache_no_lock(tmp_path):
    memory = joblib.Memory(None)
    CALLS.clear()
    assert cached_call(memory, memory.cache(_slow_square), "k", 5) == 25
    assert not (tmp_path / "skpatch-locks").exists()


def test_file_lock_excludes(tmp_path):
    path = str(tmp_path / "x.lock")
    order = []

    def hold(name):
        with file_lock(path):
            order.append(f"{name}-in")
            time.sleep(0.1)
            order.append(f"{name}-out")

    threads = [threading.Thread(target=hold, args=(n,)) for n in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Never interleaved: each holder leaves before the next enters.
    assert order[0][0] == order[1][0] and order[2][0] == order[3][0]
