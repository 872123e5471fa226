"""How many rows of a computation fit scikit-learn's ``working_memory`` at once.

Every bounded-memory loop of skpatch (the memory bank's searches and
projection, the discriminator's per-position scores, the estimators' image
blocks, the workers of :mod:`skpatch.dask`) sizes its chunks here, with
:func:`sklearn.utils.get_chunk_n_rows`: a chunk holds as many rows as fit
the budget, and at least one.
"""

from sklearn import get_config

# Private in scikit-learn (sklearn.utils._chunking since 1.3, no longer
# re-exported by sklearn.utils), as sklearn.utils._param_validation is.
from sklearn.utils._chunking import get_chunk_n_rows


def rows_per_chunk(row_bytes, *, multiple=1, working_memory=None):
    """Rows per chunk such that a chunk's working set fits ``working_memory``.

    Parameters
    ----------
    row_bytes : int or float
        Bytes that one row of the chunk needs while it is processed (its
        inputs, intermediates and outputs).
    multiple : int, default=1
        The result is a whole multiple of this (a featurizer's batch size,
        say), and at least one multiple.
    working_memory : float or None, default=None
        The budget in MiB; None means ``sklearn.get_config()["working_memory"]``.

    Returns
    -------
    n_rows : int
        ``working_memory * 2**20 // row_bytes`` rounded down to a multiple
        of ``multiple``, and at least ``multiple``.

    Notes
    -----
    A row larger than the whole budget is processed alone, silently: it is
    the least that can be held, and the budget is a target, not a limit
    (:func:`~sklearn.utils.get_chunk_n_rows` would warn on every chunked
    call).
    """
    if working_memory is None:
        working_memory = get_config()["working_memory"]
    n_rows = 0
    if row_bytes <= working_memory * 2**20:
        n_rows = get_chunk_n_rows(row_bytes, working_memory=working_memory)
    return max(multiple, n_rows // multiple * multiple)
