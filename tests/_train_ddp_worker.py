"""One process of a 2-process CPU training (launched by ``accelerate launch`` from
test_train_multiprocess.py): trains a tiny LoRA, then writes what this process saw to
``OUT/rank-N.json`` — its own losses and the fixed-batch loss after training, which only
matches across processes when their weights do."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(data: str, out: str) -> None:
    import torch

    from loradex.trainer.registration import train_and_register
    from loradex.trainer.train_config import resolve_config

    torch.set_num_threads(1)
    config = resolve_config("lora", overrides=dict(base="tiny-sd1", data=data, output_dir=out, resolution=32,
                                                   batch_size=2, steps=2, sample_steps=1, lr=1e-2, seed=3))
    result, added = train_and_register(config)
    from accelerate import PartialState

    rank = PartialState().process_index
    facts = {"rank": rank, "main_process": result.main_process, "losses": result.losses,
             "eval_before": result.eval_loss_before, "eval_after": result.eval_loss_after,
             "output": str(result.output.path) if result.output else None, "added": len(added)}
    (Path(out) / f"rank-{rank}.json").write_text(json.dumps(facts))


if __name__ == "__main__":
    main(*sys.argv[1:3])
