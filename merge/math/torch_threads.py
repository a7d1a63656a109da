"""Run small torch work on one thread.

Many small LAPACK/matmul calls run several times faster on one thread: OpenMP's spin-up costs
more than the work, and far more on a busy machine (measured: 1 s vs 14 s for the corpus LoKr's
700 factor SVDs; tiny-pipeline training likewise). The previous count is restored afterwards.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
