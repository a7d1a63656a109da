"""Run a pure per-module function on worker threads, results in input order.

A merge's per-module work at SD/SDXL shapes is a few GEMMs and one LAPACK call on ~100×100
matrices: too small for torch's intra-op threads to help (two threads make the eigendecomposition
slower), big enough that each module costs milliseconds. torch releases the GIL inside its kernels,
so N workers, each running single-threaded torch ops on its own module, keep N cores busy.

Every module is computed with one intra-op thread whatever the worker count, so the bytes of a
result do not depend on how many cores the machine has (a recipe replayed elsewhere gives the same
file as long as the CPU's kernels are the same).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from .torch_threads import single_torch_thread

T = TypeVar("T")
R = TypeVar("R")

MAX_WORKERS = 8


def default_workers() -> int:
    """torch's intra-op thread count (cores, or OMP_NUM_THREADS), at most ``MAX_WORKERS``."""
    import torch

    return max(1, min(MAX_WORKERS, torch.get_num_threads()))


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map(fn, items)`` computed on ``workers`` threads with single-threaded torch ops.

    ``items`` is consumed on the calling thread, at most 2·workers ahead of the result being
    yielded. An exception from ``fn`` is raised when its result's turn comes; closing the iterator
    early cancels what has not started.
    """
    import torch

    with single_torch_thread():
        if workers <= 1:
            for item in items:
                yield fn(item)
            return
        from concurrent.futures import ThreadPoolExecutor

        pending: deque = deque()
        with ThreadPoolExecutor(workers, thread_name_prefix="loradex-module",
                                initializer=torch.set_num_threads, initargs=(1,)) as pool:
            try:
                for item in items:
                    pending.append(pool.submit(fn, item))
                    if len(pending) >= 2 * workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()
