"""Two CPU processes (gloo), started by torchrun as ``accelerate launch`` starts GPU processes
(on CPU it wants mpirun): gradients are all-reduced, so both processes end with the same
weights although each trained on its own batches, and only the main process exports and
writes train-result.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _hub_sync_fixtures import free_port
from _train_fixtures import make_dataset

pytest.importorskip("torch")
pytest.importorskip("accelerate")

WORKER = Path(__file__).with_name("_train_ddp_worker.py")


def test_two_processes_all_reduce_and_only_the_main_one_exports(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    assert torchrun.exists(), "torch's launcher is not installed next to python"
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "out"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1",
           "LORADEX_HOME": str(tmp_path / "home")}
    cmd = [str(torchrun), "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(WORKER), str(data), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    rank0, rank1 = (json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1))
    assert rank0["losses"] != rank1["losses"]  # each process trained on its own micro-batches…
    assert rank0["eval_after"] == rank1["eval_after"]  # …yet they hold the same weights
    assert rank0["eval_before"] == rank1["eval_before"] and rank0["eval_after"] != rank0["eval_before"]
    assert rank0["main_process"] and not rank1["main_process"]
    assert rank0["output"] and Path(rank0["output"]).is_file() and rank1["output"] is None
    assert rank0["added"] == 0 and rank1["added"] == 0  # train_and_register without a catalog
    assert json.loads((out / "train-result.json").read_text())["steps"] == 2


def test_python_dash_m_loradex_cli_is_the_console_script(tmp_path):
    # what `accelerate launch -m loradex.cli train …` runs
    env = {**os.environ, "LORADEX_HOME": str(tmp_path / "home")}
    helped = subprocess.run([sys.executable, "-m", "loradex.cli", "--help"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert helped.returncode == 0 and "Usage: loradex" in helped.stdout and "train" in helped.stdout
    missing = tmp_path / "no-such-data"
    failed = subprocess.run([sys.executable, "-m", "loradex.cli", "train", "lora", "--base", "tiny-sd1",
                             "--data", str(missing)], env=env, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert failed.stderr.strip().splitlines() == [f"error: dataset folder {missing} does not exist or is not a folder"]
