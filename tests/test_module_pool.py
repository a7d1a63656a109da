"""merge_stream on worker threads: same bytes for any worker count, input order kept, errors
raised at their module, torch's thread setting restored."""

import pytest
import torch

from loradex.merge.math.lora_module import LoraModule
from loradex.merge.math.merge_methods import merge_stream
from loradex.merge.math.module_pool import ordered_map


def _groups(count: int = 40):
    gen = torch.Generator().manual_seed(11)
    groups = {}
    for i in range(count):
        out_dim, in_dim = 24 + i, 30 + i % 7
        groups[f"m{i:02d}"] = [
            LoraModule(down=torch.randn(r, in_dim, generator=gen).half(),
                       up=torch.randn(out_dim, r, generator=gen).half(), alpha=a)
            for r, a in ((4, 2.0), (8, 8.0), (6, 3.0))
        ]
    return groups


@pytest.mark.parametrize("method", ["svd", "concat"])
def test_worker_count_does_not_change_a_bit(method):
    groups = _groups()
    threads_before = torch.get_num_threads()
    runs = {}
    for workers in (1, 2, 3):
        runs[workers] = list(merge_stream(method, list(groups), groups.__getitem__, [0.8, -0.5, 1.2], rank=5 if method == "svd" else None,
                                          workers=workers, cast_to=torch.float16))
    assert torch.get_num_threads() == threads_before
    names = [name for name, _, _ in runs[1]]
    assert names == list(groups)  # input order, whatever finished first
    for workers in (2, 3):
        for (name, a, ra), (_, b, rb) in zip(runs[1], runs[workers]):
            assert a.up.dtype == torch.float16
            assert torch.equal(a.up, b.up) and torch.equal(a.down, b.down), (workers, name)
            assert ra.residual == rb.residual


def test_an_error_is_raised_at_its_module_and_later_work_is_dropped():
    seen = []

    def work(i):
        if i == 3:
            raise ValueError("module 3 is bad")
        return i

    results = ordered_map(work, range(10), workers=2)
    for value in results:
        seen.append(value)
        if value == 2:
            break
    assert seen == [0, 1, 2]
    with pytest.raises(ValueError, match="module 3"):
        list(ordered_map(work, range(10), workers=2))
