"""An exclusive lock on a file, for filling the ``cache=`` folder once.

``joblib.Memory`` computes a missing entry in every process that asks for it
at the same time: ``GridSearchCV(n_jobs=k)`` (or under
``joblib.parallel_backend("dask")``) would run the CNN on the same fold up to
``k`` times. The estimators therefore take a lock, next to the cache, around
"compute if missing": the first process computes and stores, the others wait
and then read what it stored.

POSIX ``flock`` is used where it exists (Linux, macOS; on NFS, Linux maps it
onto ``fcntl`` byte-range locks, which NFSv4 servers honour); elsewhere the
lock is a file created with ``O_CREAT | O_EXCL``, polled until it can be
created. A lock held by a process that was killed is released by the kernel
(``flock``); an ``O_EXCL`` file left behind by a killed process is taken over
after ``stale_after`` seconds.
"""

import os
import time
from contextlib import contextmanager

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

_POLL_SECONDS = 0.05


@contextmanager
def file_lock(path, *, stale_after=3600.0):
    """Hold an exclusive lock on ``path`` (created if missing) for the block.

    Parameters
    ----------
    path : str
        The lock file. Its folder must exist.
    stale_after : float, default=3600.0
        Without ``flock`` only: age in seconds after which a lock file left
        by a dead process is removed.
    """
    if fcntl is not None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # blocks; released on close or process death
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock
        return
    while True:  # pragma: no cover - Windows
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            try:
                if time.time() - os.path.getmtime(path) > stale_after:
                    os.unlink(path)
                    continue
            except OSError:
                pass
            time.sleep(_POLL_SECONDS)
    try:
        yield
    finally:
        os.close(fd)
        os.unlink(path)
