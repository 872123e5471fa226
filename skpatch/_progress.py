"""Optional progress bars (tqdm) for long fits."""


def progress(iterable, *, enabled, total=None, desc=None):
    """Wrap ``iterable`` in a tqdm bar when ``enabled``, else return it as is."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)
