"""Files `loradex resolve` reads, written in each tool's format: ComfyUI UI and API workflows (with
rgthree Power Lora Loader and LoRA Manager stacks, a muted node, an AIR-named LoRA), PNGs carrying
text chunks the way ComfyUI / A1111 write them, A1111 parameters, Civitai generation data, and a
workflow template's model list."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

from loradex.registry.folders.png_text import PNG_SIGNATURE, png_text_chunk


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def tiny_png(texts: dict[str, str] | None = None, *, extra_chunks: list[bytes] = ()) -> bytes:
    """A valid 1×1 grey PNG with ``texts`` as iTXt chunks before the image data (where PIL puts them)."""
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    idat = _chunk(b"IDAT", zlib.compress(b"\x00\x80"))
    text = b"".join(png_text_chunk(k, v) for k, v in (texts or {}).items())
    return PNG_SIGNATURE + ihdr + text + b"".join(extra_chunks) + idat + _chunk(b"IEND", b"")


def text_chunk(keyword: str, data: bytes, kind: bytes = b"tEXt") -> bytes:
    return _chunk(kind, keyword.encode("latin-1") + b"\0" + data)


def ui_node(node_id: int, node_type: str, widgets, *, mode: int = 0, models=None) -> dict:
    node = {"id": node_id, "type": node_type, "pos": [0, 0], "size": [315, 98], "flags": {}, "order": node_id,
            "mode": mode, "inputs": [], "outputs": [], "properties": {"Node name for S&R": node_type},
            "widgets_values": widgets}
    if models is not None:
        node["properties"]["models"] = models
    return node


def ui_workflow(lora_a: str, lora_a_sha: str, lora_b: str, emb_token: str, air: str) -> dict:
    """The UI format: checkpoint, LoraLoader (its template models entry carries the SHA256), a
    muted LoraLoader, rgthree's Power Lora Loader (one row on, one off), LoRA Manager's stack, a
    LoraLoaderModelOnly named by an AIR, a prompt naming an embedding."""
    return {
        "last_node_id": 9, "last_link_id": 0, "links": [], "groups": [], "config": {}, "extra": {}, "version": 0.4,
        "nodes": [
            ui_node(1, "CheckpointLoaderSimple", ["sd15/v1-5-pruned-emaonly.safetensors"]),
            ui_node(2, "LoraLoader", [lora_a, 0.8, 0.7],
                    models=[{"name": lora_a, "hash": lora_a_sha.upper(), "hash_type": "SHA256", "directory": "loras"}]),
            ui_node(3, "LoraLoader", ["muted-one.safetensors", 1.0, 1.0], mode=4),
            ui_node(4, "Power Lora Loader (rgthree)",
                    [{}, {"type": "PowerLoraLoaderHeaderWidget"},
                     {"on": True, "lora": lora_b, "strength": 0.6, "strengthTwo": None},
                     {"on": False, "lora": "switched-off.safetensors", "strength": 1}, {}, ""]),
            ui_node(5, "Lora Loader (LoraManager)",
                    ["", [{"name": "manager-pick", "strength": 0.4, "active": True, "clipStrength": 0.4},
                          {"name": "manager-off", "strength": 1.0, "active": False}]]),
            ui_node(6, "LoraLoaderModelOnly", [air, 0.5]),
            ui_node(7, "CLIPTextEncode", [f"a cat, embedding:{emb_token}, watercolor"]),
            ui_node(8, "KSampler", [1, "fixed", 20, 7.0, "euler", "normal", 1.0]),
        ],
    }


def api_prompt(lora_a: str, lora_b: str, emb_token: str) -> dict:
    """The API format of a checkpoint → LoraLoader → Power Lora Loader → LoRA Manager graph."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "10": {"class_type": "LoraLoader", "inputs": {"lora_name": lora_a, "strength_model": 0.8,
                                                       "strength_clip": 0.7, "model": ["4", 0], "clip": ["4", 1]}},
        "11": {"class_type": "Power Lora Loader (rgthree)", "inputs": {
            "PowerLoraLoaderHeaderWidget": {"type": "PowerLoraLoaderHeaderWidget"},
            "lora_1": {"on": True, "lora": lora_b, "strength": 0.6},
            "lora_2": {"on": False, "lora": "switched-off.safetensors", "strength": 1},
            "➕ Add Lora": "", "model": ["10", 0], "clip": ["10", 1]}},
        "12": {"class_type": "Lora Loader (LoraManager)", "inputs": {
            "text": "", "loras": {"__value__": [{"name": "manager-pick", "strength": 0.4, "active": True}]},
            "model": ["11", 0], "clip": ["11", 1]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": f"a cat, embedding:{emb_token}", "clip": ["12", 1]}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20, "model": ["12", 0]}},
    }


def a1111_parameters(lora_name: str, lora_hash: str, ti_name: str, ti_hash: str, model_hash: str) -> str:
    return (f"a watercolor cat <lora:{lora_name}:0.8>, <lora:no-hash-given:0.3> {ti_name}\n"
            "Negative prompt: blurry, lowres\n"
            f"Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x512, "
            f"Model hash: {model_hash}, Model: v1-5-pruned-emaonly, "
            f'Lora hashes: "{lora_name}: {lora_hash}", TI hashes: "{ti_name}: {ti_hash}", Version: v1.10.1')


def civitai_generation(air: str, pulled_version_id: int, autov2_b: str) -> dict:
    """An /api/v1/images item: civitaiResources by version id and by AIR, a hash-only resource."""
    return {"id": 555, "url": "https://image.civitai.test/x.png", "meta": {
        "prompt": "a cat <lora:wc:0.9>", "negativePrompt": "", "seed": 1, "steps": 20, "cfgScale": 7,
        "civitaiResources": [
            {"type": "checkpoint", "modelVersionId": 999001, "modelVersionName": "v1.0"},
            {"type": "lora", "weight": 0.9, "modelVersionId": pulled_version_id, "modelVersionName": "v1.5"},
            {"type": "lora", "weight": 0.5, "air": air},
        ],
        "resources": [{"name": "ink", "type": "lora", "weight": 0.6, "hash": autov2_b.upper()}],
    }}


def template_models(lora_a: str, lora_a_sha: str) -> dict:
    """A template (ComfyUI's workflow_templates) naming its models at the top."""
    return {"models": [
        {"name": "v1-5-pruned-emaonly-fp16.safetensors",
         "url": "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/"
                "v1-5-pruned-emaonly-fp16.safetensors?download=true", "directory": "checkpoints"},
        {"name": lora_a, "url": "https://example.invalid/x.safetensors", "hash": lora_a_sha,
         "hash_type": "SHA256", "directory": "loras"},
    ]}


def write(path: Path, data) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else
                     (data if isinstance(data, str) else json.dumps(data)).encode("utf-8"))
    return path
