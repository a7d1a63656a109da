"""Issue 20: the new families travel. A Flux.1 and an SD3 LoRA (diffusers convention) and a Wan 2.1
14B LoRA (ComfyUI-native keys; a family loradex recognises but does not merge) — tiny files at the
families' real widths, random factors — are pushed to a Hub (``hf`` remote) and to the team mirror
(``mirror`` remote; both ``loradex serve``, driven by the real huggingface_hub client) and pulled
back into other homes bit-identically, catalogued under the right family, found by ``loradex
search --base``, with the model card's ``base_model`` naming the family's reference repo. The
server's own catalog registers the mirror push under the same family."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from _hub_sync_fixtures import TOKEN, ThreadServer, _quiet_hub  # noqa: F401 (autouse fixture)
from loradex.cli.app import app
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.remotes import add_remote, pull, push

runner = CliRunner()

# Module paths and (out, in) widths of the real models (diffusers' FluxTransformer2DModel with the
# FLUX.1-dev config, SD3Transformer2DModel with SD3-medium's, Wan 2.1 14B's native blocks).
FLUX_DEV = {"transformer_blocks.0.attn.to_q": (3072, 3072), "transformer_blocks.0.attn.to_k": (3072, 3072),
            "transformer_blocks.0.attn.to_v": (3072, 3072), "transformer_blocks.0.attn.to_out.0": (3072, 3072),
            "transformer_blocks.0.attn.add_q_proj": (3072, 3072), "transformer_blocks.0.ff.net.0.proj": (12288, 3072),
            "single_transformer_blocks.0.attn.to_q": (3072, 3072),
            "single_transformer_blocks.0.proj_mlp": (12288, 3072),
            "single_transformer_blocks.0.proj_out": (3072, 15360)}
SD3_MEDIUM = {"transformer_blocks.0.attn.to_q": (1536, 1536), "transformer_blocks.0.attn.to_k": (1536, 1536),
              "transformer_blocks.0.attn.add_k_proj": (1536, 1536), "transformer_blocks.0.attn.to_add_out": (1536, 1536),
              "transformer_blocks.0.ff.net.0.proj": (6144, 1536), "transformer_blocks.0.ff_context.net.2": (1536, 6144)}
WAN_14B = {"blocks.0.self_attn.q": (5120, 5120), "blocks.0.self_attn.o": (5120, 5120),
           "blocks.0.cross_attn.k": (5120, 5120), "blocks.0.ffn.0": (13824, 5120), "blocks.0.ffn.2": (5120, 13824)}

# family → (modules, key prefix, the Hub id a pushed card names as base_model)
FAMILIES = {
    "flux": (FLUX_DEV, "transformer.", "black-forest-labs/FLUX.1-dev"),
    "sd3": (SD3_MEDIUM, "transformer.", "stabilityai/stable-diffusion-3-medium-diffusers"),
    "wan-14b": (WAN_14B, "diffusion_model.", "Wan-AI/Wan2.1-T2V-14B-Diffusers"),
}


def random_lora(path: Path, modules: dict, prefix: str, *, rank: int = 2, seed: int = 0) -> Path:
    """A LoRA with random bf16 factors on ``modules`` (``prefix`` + path + ``.lora_A/B.weight``);
    diffusers-convention files carry their alpha in ``lora_adapter_metadata`` as diffusers writes it."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for module, (out, inp) in modules.items():
        tensors[f"{prefix}{module}.lora_A.weight"] = (torch.randn(rank, inp, generator=gen) * 0.01).bfloat16()
        tensors[f"{prefix}{module}.lora_B.weight"] = (torch.randn(out, rank, generator=gen) * 0.01).bfloat16()
    metadata = {"lora_adapter_metadata": json.dumps({"transformer.r": rank, "transformer.lora_alpha": float(rank)})} \
        if prefix == "transformer." else {}
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with ThreadServer(tmp_path_factory.mktemp("family-served") / "home") as srv:
        yield srv


def _card_base_model(server, repo_id: str, tag: str) -> str:
    readme = httpx.get(f"{server.url}/{repo_id}/resolve/{tag}/README.md",
                       headers={"authorization": f"Bearer {TOKEN}"}).text
    return yaml.safe_load(readme.split("---")[1])["base_model"]


def _search(home: Path, base: str) -> list[str]:
    result = runner.invoke(app, ["search", "--base", base, "--home", str(home), "--json"], catch_exceptions=True)
    assert result.exit_code == 0, (result.output, result.exception)
    data = json.loads(result.stdout)
    return [hit["name"] for hit in data["hits"]]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_push_and_pull_through_the_hub_and_the_mirror(family, hub, tmp_path, monkeypatch):
    modules, prefix, base_model = FAMILIES[family]
    name = f"{family.replace('.', '')}-style"
    src = random_lora(tmp_path / f"{name}.safetensors", modules, prefix, seed=len(family))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    home_a = Catalog(tmp_path / "a")
    added = add_file(home_a, src, name=name).version
    assert added.probe["base"] == family and home_a.get_adapter(name).base == family

    # the Hub (an hf remote) and the team mirror
    monkeypatch.setenv("LORADEX_TOKEN_HUB", TOKEN)
    add_remote(home_a, "hub", f"{hub.url}/someone", "hf")
    add_remote(home_a, "team", f"{hub.url}/team", "mirror")
    # (one server plays both; the Hub repo gets its own name, as the server names adapters after repos)
    to_hub = push(home_a, added.ref, "hub", repo=f"{name}-hub")
    to_mirror = push(home_a, added.ref, "team")
    assert to_hub.repo_id == f"someone/{name}-hub" and to_mirror.repo_id == f"team/{name}"
    assert _card_base_model(hub, to_hub.repo_id, to_hub.tag) == base_model
    # the server's catalog registered the pushed version under the family
    served = Catalog(hub.home)
    assert served.get_adapter(name).base == family and served.resolve(f"{name}@1.0.0").sha256 == digest

    for how, ref in (("hub", f"hf://someone/{name}-hub@v1.0.0"), ("mirror", f"mirror://team/{name}@v1.0.0")):
        home = tmp_path / f"pulled-{how}"
        catalog = Catalog(home)
        add_remote(catalog, "team", f"{hub.url}/team", "mirror")
        got = pull(catalog, ref, endpoint=hub.url, token=TOKEN) if how == "hub" else pull(catalog, ref)
        v = got.version
        assert v.sha256 == digest and catalog.blobs.path_for(v.sha256).read_bytes() == src.read_bytes()
        assert catalog.get_adapter(name).base == family and v.probe["base"] == family
        assert v.ref == f"{name}@1.0.0" and got.had_manifest
        assert _search(home, family) == [name]
        assert _search(home, "sdxl") == []
