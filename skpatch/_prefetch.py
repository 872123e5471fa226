"""Read ahead in background threads, in order, with bounded memory.

Decoding an image file (PIL's decoders release the GIL) can then overlap
with the CNN's forward pass on the previous batch.
"""

from collections import deque
from concurrent.futures import ThreadPoolExecutor


def prefetch_map(fn, items, *, n_workers, ahead):
    """Yield ``fn(item)`` for every item, in order, computed ahead in threads.

    At most ``ahead`` results are computed (or held) in advance, so memory
    stays bounded whatever the number of items. ``n_workers=0`` calls ``fn``
    in the caller's thread, one item at a time. An exception raised by
    ``fn`` is raised here, at its item's turn.
    """
    if n_workers <= 0:
        for item in items:
            yield fn(item)
        return
    iterator = iter(items)
    pool = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="skpatch-read")
    pending = deque()
    try:
        for item in iterator:
            pending.append(pool.submit(fn, item))
            if len(pending) >= max(1, ahead):
                break
        while pending:
            result = pending.popleft().result()
            for item in iterator:
                pending.append(pool.submit(fn, item))
                break
            yield result
    finally:
        # On early exit (an error, or the consumer stopped) drop the work
        # not started yet; running reads finish in the background.
        pool.shutdown(wait=False, cancel_futures=True)
