"""The on-disk cache of the estimators' ``cache=`` parameter.

The CNN features of an image collection (keyed by the featurizer's
parameters and the images) and the discriminator's raw outlier scores are
cached in a :class:`joblib.Memory`; concurrent callers sharing a folder
(parallel grid-search candidates, Dask workers) compute an entry once,
under a file lock. The pipeline steps use it themselves: the estimators
pass the memory down, as they pass ``n_jobs``.
"""

import os

import joblib
from sklearn.utils.validation import check_memory

from ._filelock import file_lock


#: The layout of cached features, part of every feature key.
_FEATURE_LAYOUT = "features on their patch grid (n_images, h, w, n_features)"


def check_cache(cache):
    """``cache`` as a joblib.Memory; a folder that cannot be used is a clear error."""
    try:
        memory = check_memory(cache)  # a str makes joblib create the folder
        location = getattr(memory, "location", None)
        if location is not None:
            os.makedirs(location, exist_ok=True)
    except OSError as exc:
        msg = f"cache={cache!r} cannot be used as a cache folder: {exc.strerror or exc}."
        raise ValueError(msg) from exc
    if location is not None and not os.access(location, os.W_OK | os.X_OK):
        raise ValueError(f"cache={cache!r} is a folder this process cannot write to.")
    return memory


def caches(memory):
    return getattr(memory, "location", None) is not None


def cached_call(memory, func, *args, **kwargs):
    """``func(*args, **kwargs)`` of a ``memory.cache``-d ``func``, computed once.

    Concurrent callers (the candidates of a parallel grid search, on one
    machine or on the workers of a Dask cluster sharing the folder) would
    each compute a missing entry; a lock file next to the cache makes the
    first compute it and the others wait and read it. A call already in the
    cache, or a memory that does not cache, takes no lock.
    """
    if not caches(memory) or func.check_call_in_cache(*args, **kwargs):
        return func(*args, **kwargs)
    folder = os.path.join(memory.location, "skpatch-locks")
    os.makedirs(folder, exist_ok=True)
    # One lock per entry: the function's name and the hash of its positional
    # arguments, which are the cache key (the keyword ones are ignored by
    # the cache, and hashing the images again would cost a pass over them).
    name = f"{func.func.__name__}-{joblib.hash(args)}.lock"
    with file_lock(os.path.join(folder, name)):
        return func(*args, **kwargs)


def feature_key(featurizer, images):
    """Hash of what the features depend on: the featurizer's parameters and the images.

    The same key serves fit (``fit_transform_step``) and scoring
    (``transform_step``); the fitted featurizer itself is left out, since
    fitting is deterministic given its parameters and a torch module does
    not hash the same way twice.
    """
    params = featurizer.get_params(deep=True) if hasattr(featurizer, "get_params") else featurizer
    # The output layout is part of the key: entries written since the
    # features carry their grid, (n, h, w, d), must not reach an older
    # skpatch sharing the folder, which reads (n, h * w, d).
    return joblib.hash((type(featurizer).__qualname__, params, images, _FEATURE_LAYOUT))


def fit_transform_step(key, step, X):
    """Module-level so that joblib.Memory can cache it, on ``key`` only."""
    features = step.fit_transform(X)
    return step, features


def transform_step(key, step, X):
    """Module-level so that joblib.Memory can cache it, on ``key`` only."""
    return step.transform(X)
