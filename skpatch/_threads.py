"""Scoped thread settings, so that ``n_jobs`` never leaks globally."""

import os
from contextlib import contextmanager, nullcontext

import torch
from threadpoolctl import threadpool_limits


def effective_n_jobs(n_jobs):
    """Number of threads for ``n_jobs`` (None: torch's current setting)."""
    if n_jobs is None:
        return torch.get_num_threads()
    if n_jobs < 0:
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    if n_jobs == 0:
        raise ValueError("n_jobs == 0 is not a valid number of threads.")
    return int(n_jobs)


@contextmanager
def torch_threads(n_jobs):
    """Run the block with ``n_jobs`` torch intra-op threads, then restore.

    An explicit ``n_jobs`` also caps numpy's BLAS (the coreset selection runs
    its distance updates in numpy), through threadpoolctl.
    """
    previous = torch.get_num_threads()
    wanted = effective_n_jobs(n_jobs)
    if wanted != previous:
        torch.set_num_threads(wanted)
    try:
        with threadpool_limits(limits=wanted, user_api="blas") if n_jobs is not None else nullcontext():
            yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
