"""``loradex export-workflow "prompt <lora:a@production:0.8>" --base CKPT -o wf.json``: a prompt's
stack as a ComfyUI workflow (``registry.folders.comfyui_workflow_export`` draws the graph).

Each ``<lora:…>`` tag is resolved to its exact catalog version (an unknown ref is a
PromptSyntaxError at the tag's column, as for ``generate``); the tag's UNet weight becomes the
LoraLoader's ``strength_model`` and its text-encoder weight ``strength_clip``; a ``<name>`` token
naming a catalog embedding becomes ComfyUI's ``embedding:NAME.safetensors``.
"""

from __future__ import annotations

from pathlib import Path

from loradex.merge.conventions.prompt_syntax import check_refs, parse_prompt
from loradex.registry.errors import LoradexError
from loradex.registry.folders.comfyui_workflow_export import (WorkflowSpec, base_family, base_file,
                                                             build_workflow, download_remote, model_file,
                                                             write_workflow)


def workflow_for_prompt(catalog, prompt: str, *, base: str, negative: str = "", seed: int = 0, steps: int = 20,
                        cfg: float = 7.0, width: int = 512, height: int = 512, scheduler: str | None = None,
                        remote: str | None = None, out: str | Path | None = None) -> dict:
    """The workflow dict (written to ``out`` when given)."""
    parsed = parse_prompt(prompt)
    versions = check_refs(prompt, parsed, catalog.resolve)
    mirror = download_remote(catalog, remote)
    loras = []
    for tag, version in zip(parsed.loras, versions):
        kind = catalog.get_adapter(version.adapter).kind
        loras.append((model_file(version, kind, mirror), tag.unet_weight, tag.te_weight))
    embeddings = []
    for token in {t.token for t in parsed.embedding_tokens}:  # <name> tokens naming a catalog embedding
        try:
            version = catalog.resolve(token.strip("<>"))
        except LoradexError:
            continue  # not a catalog name: left in the prompt as written
        if catalog.get_adapter(version.adapter).kind == "embedding":
            embeddings.append((token, model_file(version, "embedding", mirror)))
    spec = WorkflowSpec(base=base_file(catalog, base, None, mirror), positive=parsed.clean_prompt,
                        family=base_family(catalog, base),
                        embeddings=embeddings,
                        negative=negative, loras=loras, seed=seed, steps=steps, cfg=cfg, width=width,
                        height=height, scheduler=scheduler)
    workflow = build_workflow(spec)
    if out is not None:
        write_workflow(out, workflow)
    return workflow
