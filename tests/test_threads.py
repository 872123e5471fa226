import pytest
import torch
from threadpoolctl import threadpool_info

from skpatch._threads import effective_n_jobs, torch_threads


def _blas_threads():
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_n_jobs_scopes_torch_and_blas_threads():
    torch_before, blas_before = torch.get_num_threads(), _blas_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
        assert all(n == 1 for n in _blas_threads())
    assert torch.get_num_threads() == torch_before
    assert _blas_threads() == blas_before


def test_none_leaves_threads_alone():
    torch_before, blas_before = torch.get_num_threads(), _blas_threads()
    with torch_threads(None):
        assert torch.get_num_threads() == torch_before
        assert _blas_threads() == blas_before


def test_effective_n_jobs():
    assert effective_n_jobs(3) == 3
    assert effective_n_jobs(-1) >= 1
    with pytest.raises(ValueError, match="n_jobs == 0"):
        effective_n_jobs(0)
