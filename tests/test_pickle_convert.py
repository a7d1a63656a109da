"""Opted-in pickles become safetensors versions: same tensors, converted_from edge, never any code run."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from loradex.cli.app import app
from loradex.merge.conventions.pickle_to_safetensors import add_pickle_converted, pickle_to_safetensors
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import UnsafePickle, UnsupportedFormat
from loradex.registry.files.pickle_scan import safe_load_pickle
from loradex.registry.probe import probe_path

CORPUS_FILES = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "files"
needs_corpus = pytest.mark.skipif(not CORPUS_FILES.is_dir(), reason="../shared/corpus/files absent (a user's clone)")
runner = CliRunner()

# corpus pickle → (expected probe format of the converted version, key the pickle's tensor lands under)
CORPUS_PICKLES = {
    "ti_a1111_bad-hands-5_mayaru.pt": ("a1111-embedding", "emb_params"),
    "ti_diffusers_learned_embeds_fastai_oldzip.bin": ("diffusers-embedding", "<birb-style>"),
    "cloneofsimo_lora_kiriko2.ti.pt": ("diffusers-embedding", "<krk>"),
}


def cli(*args, ok=True):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=True)
    if ok and result.exit_code != 0:
        raise AssertionError(f"loradex {args} failed: {result.output} {result.exception!r}")
    return result


def _pickle_tensor(obj, key):
    """The tensor the converted file must hold under ``key``, read from the loaded pickle."""
    if "string_to_param" in obj:
        (t,) = obj["string_to_param"].values()
        return t
    return obj[key]


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@needs_corpus
@pytest.mark.parametrize("file_name", sorted(CORPUS_PICKLES))
def test_corpus_pickle_added_as_safetensors_with_lineage(tmp_path, file_name):
    src = CORPUS_FILES / file_name
    fmt, key = CORPUS_PICKLES[file_name]
    original = safe_load_pickle(src)
    result = cli("add", src, "--allow-pickle", "--json")
    data = json.loads(result.stdout)
    catalog = Catalog()
    version = catalog.resolve(data["ref"])
    blob = catalog.blobs.path_for(version.sha256)
    # the stored version is a safetensors file, not the pickle
    assert version.probe["container"] == "safetensors" and version.file_name.endswith(".safetensors")
    assert version.sha256 != hashlib.sha256(src.read_bytes()).hexdigest()
    assert (version.probe["kind"], version.probe["format"], version.probe["base"]) == ("embedding", fmt, "sd1")
    tensors = load_file(str(blob))
    assert list(tensors) == [key]
    want = _pickle_tensor(original, key)
    assert tensors[key].dtype == want.dtype and torch.equal(tensors[key], want)
    (edge,) = catalog.lineage(version.ref)
    src_sha = hashlib.sha256(src.read_bytes()).hexdigest()
    assert (edge.relation, edge.parent) == ("converted_from", f"sha256:{src_sha}")
    assert edge.recipe["op"] == "pickle-to-safetensors" and edge.recipe["source_file"] == file_name
    assert edge.recipe["source_sha256"] == src_sha
    assert "torch._utils._rebuild_tensor_v2" in edge.recipe["scan_globals"]
    # the probe of the stored blob agrees (a fresh probe, not the stored facts)
    assert probe_path(blob).format == fmt


@needs_corpus
def test_a1111_fields_kept_in_metadata_and_conversion_is_byte_stable(tmp_path):
    src = CORPUS_FILES / "ti_a1111_bad-hands-5_mayaru.pt"
    a, report = pickle_to_safetensors(src, tmp_path / "a")
    b, _ = pickle_to_safetensors(src, tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()
    with safe_open(str(a), framework="pt") as fh:
        meta = fh.metadata()
    assert (meta["name"], meta["step"], meta["sd_checkpoint"]) == ("bad-hands-5", "1419", "5d2f8777af")
    assert report["layout"] == "a1111-embedding" and "string_to_token" in report["dropped"]
    assert a.name == "ti_a1111_bad-hands-5_mayaru.safetensors"  # A1111 names the embedding by file stem


def test_keep_pickle_stores_the_pickle_as_is(tmp_path):
    p = tmp_path / "tok.pt"
    torch.save({"<tok>": torch.arange(768, dtype=torch.float32)}, p)
    data = json.loads(cli("add", p, "--allow-pickle", "--keep-pickle", "--json").stdout)
    assert data["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
    assert Catalog().lineage(data["ref"]) == []


def test_lora_state_dict_and_checkpoint_keep_their_keys(tmp_path):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(8, 768, generator=g, dtype=torch.float32)
    lora = {  # kohya keys; up is a view sharing storage with another tensor, and non-contiguous
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": base[:4].to(torch.float16),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": base[4:, :320].T,
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0),
    }
    p = tmp_path / "kohya_lora.pt"
    torch.save(lora, p)
    dest, report = pickle_to_safetensors(p, tmp_path / "out")
    back = load_file(str(dest))
    assert set(back) == set(lora) and report["convention"] == "lora:kohya"
    for k, t in lora.items():
        assert back[k].dtype == t.dtype and torch.equal(back[k], t)
    assert probe_path(dest).format == probe_path(p, allow_pickle=True).format
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"model.w": base, "model.b": torch.ones(3)}, "global_step": 470000,
                "optimizer_states": [{"lr": 1.0}]}, ckpt)
    dest, report = pickle_to_safetensors(ckpt, tmp_path / "out")
    back = load_file(str(dest))
    assert set(back) == {"model.w", "model.b"} and torch.equal(back["model.w"], base)
    assert report["metadata"]["checkpoint.global_step"] == "470000" and "optimizer_states" in report["dropped"]


def test_non_tensor_junk_refused_with_its_keys(tmp_path):
    p = tmp_path / "junk.pt"
    torch.save({"lora.down": torch.zeros(2, 3), "notes": "hello", "cfg": {"rank": 4}}, p)
    with pytest.raises(UnsupportedFormat) as exc:
        pickle_to_safetensors(p, tmp_path)
    assert "notes (str)" in str(exc.value) and "cfg.rank (int)" in str(exc.value)
    assert not (tmp_path / "junk.safetensors").exists()


def test_pickle_without_opt_in_refused_naming_the_option(tmp_path):
    p = tmp_path / "tok.pt"
    torch.save({"<tok>": torch.zeros(768)}, p)
    result = cli("add", p, ok=False)
    assert result.exit_code != 0 and isinstance(result.exception, UnsafePickle)
    assert "--allow-pickle" in str(result.exception)
    # what a user sees: one line on stderr naming the option, exit 1, nothing added
    exe = Path(sys.executable).with_name("loradex")
    proc = subprocess.run([str(exe), "add", str(p)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LORADEX_HOME": os.environ["LORADEX_HOME"]})
    assert proc.returncode == 1 and "--allow-pickle" in proc.stderr and "Traceback" not in proc.stderr
    assert Catalog().list_adapters() == []


def test_malicious_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"<tok>": torch.zeros(768), "x": Payload(marker)}, evil)
    raw = tmp_path / "evil.bin"
    raw.write_bytes(pickle.dumps({"w": Payload(marker)}, protocol=4))
    for path in (evil, raw):
        for args in ([], ["--allow-pickle"], ["--allow-pickle", "--keep-pickle"]):
            result = cli("add", path, *args, ok=False)
            assert result.exit_code != 0 and not marker.exists(), (path.name, args)
        with pytest.raises(UnsafePickle):
            add_pickle_converted(Catalog(), path)
        assert not marker.exists()
    assert Catalog().list_adapters() == []
