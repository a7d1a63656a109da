"""Issue 7: diffusers' own `load_lora_weights("owner/repo")`, with HF_ENDPOINT pointed at
`loradex serve`, finds and loads what `loradex push` published — the same image as loading the
catalog's file from disk, and not the base's image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from _hub_sync_fixtures import _quiet_hub  # noqa: F401 (fixture)
from _hub_sync_fixtures import TOKEN, ThreadServer, publishing_home
from loradex.cli.app import app

# Runs in a fresh interpreter: huggingface_hub reads HF_ENDPOINT once, at import.
_LOAD_SCRIPT = r"""
import json, sys
import numpy as np
import torch
from loradex.trainer.tiny_pipeline import build_tiny_sd1_pipeline

local_file, out = sys.argv[1], sys.argv[2]

def render(pipe):
    image = pipe("a red fox", num_inference_steps=2, guidance_scale=5.0, height=32, width=32,
                 generator=torch.Generator().manual_seed(3), output_type="np").images[0]
    return np.asarray(image, dtype=np.float64)

torch.set_num_threads(1)
pipe = build_tiny_sd1_pipeline()
base = render(pipe)
pipe.load_lora_weights("team/style", adapter_name="from_hub")        # resolved via HF_ENDPOINT
from_hub = render(pipe)
pipe.delete_adapters("from_hub")
pipe.load_lora_weights(local_file, adapter_name="from_disk")
from_disk = render(pipe)
json.dump({"hub_vs_disk": float(np.abs(from_hub - from_disk).max()),
           "hub_vs_base": float(np.abs(from_hub - base).max())}, open(out, "w"))
"""


def test_diffusers_load_lora_weights_from_the_mirror(tmp_path):
    pub = publishing_home(tmp_path / "a", tmp_path, evidence=False)
    home = str(tmp_path / "a")
    with ThreadServer(tmp_path / "server-home") as srv:
        # the remote's own setting picks what push sends (no --format on the push itself)
        result = CliRunner().invoke(app, ["remote", "add", "team", f"{srv.url}/team", "--kind", "mirror",
                                          "--format", "diffusers", "--home", home])
        assert result.exit_code == 0, (result.output, result.exception)
        result = CliRunner().invoke(app, ["push", pub.ref, "team", "--home", home, "--json"])
        assert result.exit_code == 0, (result.output, result.exception)
        assert json.loads(result.stdout)["uploaded"] == ["README.md", "loradex.json",
                                                         "pytorch_lora_weights.safetensors"]
        out = tmp_path / "result.json"
        env = {**os.environ, "HF_ENDPOINT": srv.url, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1",
               "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_PROGRESS_BARS": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1"}
        env.pop("HF_HUB_OFFLINE", None)
        proc = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, str(pub.catalog.blobs.path_for(pub.sha256)),
                               str(out)], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["hub_vs_disk"] == 0.0, figures    # the very same weights
    assert figures["hub_vs_base"] > 1e-3, figures    # and they do change the image
    # what diffusers fetched came through the mirror's cache layout under HF_HOME
    assert list((tmp_path / "hf-home").rglob("pytorch_lora_weights.safetensors"))


def test_remote_add_refuses_unknown_push_formats(tmp_path):
    result = CliRunner().invoke(app, ["remote", "add", "team", "http://127.0.0.1:9/team", "--kind", "mirror",
                                      "--format", "ckpt", "--home", str(tmp_path)])
    assert result.exit_code == 1 and "kohya and/or diffusers" in str(result.exception)
