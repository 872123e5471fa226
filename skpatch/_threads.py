"""Scoped thread settings, so that ``n_jobs`` never leaks globally.

Inside a Dask worker (``skpatch.dask``, or any estimator method that a
``joblib.parallel_backend("dask")`` search runs there), the machine's core
count is the wrong default: a worker is given ``nthreads`` threads, and
several workers share the machine. There ``n_jobs=None`` means the worker's
thread count and ``n_jobs=-1`` counts from it, for torch and for BLAS alike.
"""

import os
import sys
from contextlib import contextmanager, nullcontext

import torch
from threadpoolctl import threadpool_limits


def dask_worker_threads():
    """Thread count of the Dask worker running this code, or None outside one."""
    distributed = sys.modules.get("distributed")  # never imported just to ask
    if distributed is None:
        return None
    try:
        worker = distributed.get_worker()
    except ValueError:  # "No worker found": not inside a task
        return None
    nthreads = getattr(getattr(worker, "state", worker), "nthreads", None)
    return int(nthreads) if nthreads else None


def effective_n_jobs(n_jobs):
    """Number of threads for ``n_jobs``.

    None is torch's current setting, or the worker's thread count inside a
    Dask worker; negative values count back from the machine's cores (or
    from the worker's threads), as in joblib.
    """
    return _effective_n_jobs(n_jobs, dask_worker_threads())


def _effective_n_jobs(n_jobs, worker):
    """:func:`effective_n_jobs` given the worker's thread count (None outside one)."""
    if n_jobs == 0:
        raise ValueError("n_jobs == 0 is not a valid number of threads.")
    if n_jobs is None:
        return torch.get_num_threads() if worker is None else worker
    if n_jobs < 0:
        cores = worker if worker is not None else (os.cpu_count() or 1)
        return max(1, cores + 1 + n_jobs)
    return int(n_jobs)


@contextmanager
def torch_threads(n_jobs):
    """Run the block with ``n_jobs`` torch intra-op threads, then restore.

    An explicit ``n_jobs`` also caps numpy's BLAS (the coreset selection runs
    its distance updates in numpy), through threadpoolctl; so does running
    inside a Dask worker, whose BLAS then uses the worker's threads.
    """
    previous = torch.get_num_threads()
    worker = dask_worker_threads()
    wanted = _effective_n_jobs(n_jobs, worker)
    if wanted != previous:
        torch.set_num_threads(wanted)
    limit_blas = n_jobs is not None or worker is not None
    try:
        with threadpool_limits(limits=wanted, user_api="blas") if limit_blas else nullcontext():
            yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
