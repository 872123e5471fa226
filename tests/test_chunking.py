import warnings

import pytest
from sklearn import config_context

from skpatch._chunking import rows_per_chunk


def test_rows_fit_the_working_memory():
    with config_context(working_memory=1):
        assert rows_per_chunk(1024) == 1024
        assert rows_per_chunk(1000) == 1048
    assert rows_per_chunk(1024, working_memory=2) == 2048
    assert rows_per_chunk(0.5 * 2**20, working_memory=0.75) == 1


@pytest.mark.parametrize("multiple", [1, 4, 7])
def test_whole_multiples_and_at_least_one(multiple):
    with config_context(working_memory=1):
        n = rows_per_chunk(1000, multiple=multiple)
        assert n % multiple == 0 and n <= 1048 and n > 1048 - multiple
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a row over the budget goes alone, silently
            assert rows_per_chunk(2**21, multiple=multiple) == multiple
