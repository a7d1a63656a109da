"""The way back to ComfyUI: a stack made with loradex as a ComfyUI workflow (UI format).

The graph is the one ComfyUI's default workflow draws, with a LoRA chain spliced in:
``CheckpointLoaderSimple → LoraLoader × n → CLIPTextEncode × 2 → KSampler (EmptyLatentImage) →
VAEDecode → SaveImage``. A base whose family's pipeline aspect declares ``COMFYUI_LOADERS``
(Flux.1, SD 3.5) is loaded in parts instead: ``UNETLoader`` + the declared text-encoder loader
(DualCLIPLoader / TripleCLIPLoader) + ``VAELoader``, with the declared guidance node (FluxGuidance)
between the positive prompt and the sampler. The JSON follows the frontend's workflow schema (version 0.4): every
node has ``id``, ``type``, ``pos``, ``size``, ``flags``, ``order``, ``mode``, ``inputs`` (``link``
ids), ``outputs`` (``links`` lists, ``slot_index``), ``properties`` and ``widgets_values``; each
``links`` row is ``[id, from node, from slot, to node, to slot, type]`` and matches both ends.

Each loader node's ``properties.models`` (and the workflow's top-level ``models``) carries the
file's ``name``, ``hash`` (SHA256), ``hash_type`` and ``directory`` (``loras``/``checkpoints``),
plus a ``url`` where loradex knows one: the team mirror's download URL when a ``mirror`` remote
is named (or is the only one), else the Civitai download URL of a version pulled from Civitai.
``loradex resolve`` reads these back (round trip). Pure JSON: no torch, no network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from ..errors import NotFound, UsageError
from ..files.atomic_files import atomic_output
from ..remotes import RemoteRecord, get_remote, list_remotes

WORKFLOW_VERSION = 0.4
# loradex's scheduler names (trainer.render.SCHEDULERS) → ComfyUI's (sampler_name, scheduler)
COMFY_SAMPLERS = {
    None: ("euler", "normal"), "euler": ("euler", "normal"), "euler_a": ("euler_ancestral", "normal"),
    "ddim": ("ddim", "ddim_uniform"), "dpm++2m": ("dpmpp_2m", "normal"),
    "dpm++2m_karras": ("dpmpp_2m", "karras"), "lms": ("lms", "normal"), "pndm": ("euler", "normal"),
}
DIRECTORIES = {"lora": "loras", "lycoris": "loras", "checkpoint": "checkpoints", "embedding": "embeddings"}


@dataclass(frozen=True)
class ModelFile:
    name: str  # as ComfyUI lists it in its folder (what `loradex export --layout comfyui` writes)
    directory: str
    sha256: str | None = None
    url: str | None = None

    def to_dict(self) -> dict:
        out = {"name": self.name, "directory": self.directory}
        if self.sha256:
            out.update(hash=self.sha256, hash_type="SHA256")
        if self.url:
            out["url"] = self.url
        return out


@dataclass
class WorkflowSpec:
    base: ModelFile
    positive: str
    negative: str = ""
    loras: list[tuple[ModelFile, float, float]] = field(default_factory=list)  # (file, model, clip strength)
    embeddings: list[tuple[str, ModelFile]] = field(default_factory=list)  # (token in the prompt, file)
    seed: int = 0
    steps: int = 20
    cfg: float = 7.0
    width: int = 512
    height: int = 512
    scheduler: str | None = None
    family: str | None = None  # the base's family: its pipeline aspect may say how ComfyUI loads it


def comfyui_loaders(family: str | None) -> dict | None:
    """The family's ``COMFYUI_LOADERS`` (separate diffusion-model, text-encoder and VAE loaders, and
    a guidance node), or None: one CheckpointLoaderSimple holds the whole base."""
    from loradex.families import find_family

    found = find_family(family) if family else None
    module = found.aspect("pipeline") if found is not None else None
    return getattr(module, "COMFYUI_LOADERS", None) if module is not None else None


# --- the graph -----------------------------------------------------------------------------
class _Graph:
    def __init__(self):
        self.nodes: list[dict] = []
        self.links: list[list] = []

    def node(self, node_type: str, inputs: list[tuple[str, str]], outputs: list[tuple[str, str]],
             widgets: list, pos: tuple[int, int], size=(315, 98), models: list[ModelFile] = ()) -> dict:
        node = {"id": len(self.nodes) + 1, "type": node_type, "pos": list(pos), "size": list(size),
                "flags": {}, "order": len(self.nodes), "mode": 0,
                "inputs": [{"name": n, "type": t, "link": None} for n, t in inputs],
                "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(outputs)],
                "properties": {"Node name for S&R": node_type}, "widgets_values": list(widgets)}
        if models:
            node["properties"]["models"] = [m.to_dict() for m in models]
        self.nodes.append(node)
        return node

    def link(self, source: dict, slot: int, target: dict, input_name: str) -> None:
        link_id = len(self.links) + 1
        target_slot = next(i for i, s in enumerate(target["inputs"]) if s["name"] == input_name)
        kind = source["outputs"][slot]["type"]
        source["outputs"][slot]["links"].append(link_id)
        target["inputs"][target_slot]["link"] = link_id
        self.links.append([link_id, source["id"], slot, target["id"], target_slot, kind])


def build_workflow(spec: WorkflowSpec) -> dict:
    """The UI-format workflow of ``spec`` (see the module docstring)."""
    sampler, scheduler = COMFY_SAMPLERS.get(spec.scheduler, COMFY_SAMPLERS[None])
    positive_text = comfy_embedding_syntax(spec.positive, spec.embeddings)
    negative_text = comfy_embedding_syntax(spec.negative, spec.embeddings)
    g = _Graph()
    loaders = comfyui_loaders(spec.family)
    base_models, (model_from, clip_from, vae_from) = _base_loaders(g, spec.base, loaders)
    for i, (lora, strength_model, strength_clip) in enumerate(spec.loras):
        node = g.node("LoraLoader", [("model", "MODEL"), ("clip", "CLIP")], [("MODEL", "MODEL"), ("CLIP", "CLIP")],
                      [lora.name, float(strength_model), float(strength_clip)], (380 + 340 * i, 200), (315, 126),
                      models=[lora])
        g.link(*model_from, node, "model")
        g.link(*clip_from, node, "clip")
        model_from, clip_from = (node, 0), (node, 1)
    x = 380 + 340 * len(spec.loras)
    positive = g.node("CLIPTextEncode", [("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")],
                      [positive_text], (x, 100), (425, 180))
    negative = g.node("CLIPTextEncode", [("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")],
                      [negative_text], (x, 330), (425, 180))
    positive_from, sampler_cfg = (positive, 0), spec.cfg
    if loaders and loaders.get("guidance_node"):  # distilled guidance: on the conditioning, not the sampler
        guidance = g.node(loaders["guidance_node"], [("conditioning", "CONDITIONING")],
                          [("CONDITIONING", "CONDITIONING")], [float(spec.cfg)], (x + 440, 20), (315, 58))
        g.link(positive, 0, guidance, "conditioning")
        positive_from = (guidance, 0)
    if loaders and loaders.get("sampler_cfg") is not None:
        sampler_cfg = loaders["sampler_cfg"]
    latent = g.node("EmptyLatentImage", [], [("LATENT", "LATENT")], [int(spec.width), int(spec.height), 1],
                    (x, 560), (315, 106))
    ksampler = g.node("KSampler", [("model", "MODEL"), ("positive", "CONDITIONING"),
                                   ("negative", "CONDITIONING"), ("latent_image", "LATENT")],
                      [("LATENT", "LATENT")],
                      [int(spec.seed), "fixed", int(spec.steps), float(sampler_cfg), sampler, scheduler, 1.0],
                      (x + 470, 200), (315, 262))
    decode = g.node("VAEDecode", [("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")], [],
                    (x + 820, 200), (210, 46))
    save = g.node("SaveImage", [("images", "IMAGE")], [], ["loradex"], (x + 1070, 200), (315, 270))
    g.link(*clip_from, positive, "clip")
    g.link(*clip_from, negative, "clip")
    g.link(*model_from, ksampler, "model")
    g.link(*positive_from, ksampler, "positive")
    g.link(negative, 0, ksampler, "negative")
    g.link(latent, 0, ksampler, "latent_image")
    g.link(ksampler, 0, decode, "samples")
    g.link(*vae_from, decode, "vae")
    g.link(decode, 0, save, "images")
    for node in g.nodes:  # LiteGraph wants ``links: null`` on an output nothing reads
        for output in node["outputs"]:
            output["links"] = output["links"] or None
    return {"last_node_id": len(g.nodes), "last_link_id": len(g.links), "nodes": g.nodes, "links": g.links,
            "groups": [], "config": {}, "extra": {"loradex": {"sampler_from": spec.scheduler}},
            "version": WORKFLOW_VERSION,
            "models": [m.to_dict() for m in base_models] + [lora.to_dict() for lora, _, _ in spec.loras]
                      + [file.to_dict() for _, file in spec.embeddings]}


def _base_loaders(g: _Graph, base: ModelFile, loaders: dict | None):
    """The base's loader nodes: ``(model files, (MODEL, CLIP, VAE) outputs as (node, slot))``."""
    if loaders is None:
        ckpt = g.node("CheckpointLoaderSimple", [], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")],
                      [base.name], (20, 200), models=[base])
        return [base], ((ckpt, 0), (ckpt, 1), (ckpt, 2))
    # the base file is the diffusion model alone, where ComfyUI keeps those
    unet_file = ModelFile(name=base.name, directory="diffusion_models", sha256=base.sha256, url=base.url)
    clip_files = [ModelFile(name=name, directory="text_encoders") for name in loaders["clip_files"]]
    vae_file = ModelFile(name=loaders["vae_file"], directory="vae")
    unet = g.node("UNETLoader", [], [("MODEL", "MODEL")], [unet_file.name, "default"], (20, 100), (315, 82),
                  models=[unet_file])
    clip_widgets = [f.name for f in clip_files] + ([loaders["clip_type"]] if loaders.get("clip_type") else [])
    clip = g.node(loaders["clip_loader"], [], [("CLIP", "CLIP")], clip_widgets, (20, 240), (315, 130),
                  models=clip_files)
    vae = g.node("VAELoader", [], [("VAE", "VAE")], [vae_file.name], (20, 420), (315, 58), models=[vae_file])
    return [unet_file, *clip_files, vae_file], ((unet, 0), (clip, 0), (vae, 0))


def comfy_embedding_syntax(text: str, embeddings: list[tuple[str, ModelFile]]) -> str:
    """ComfyUI loads an embedding only where the prompt says ``embedding:FILE``: each token loradex
    used for it (``<name>`` or a trigger word, whole words, any case) is written that way."""
    import re

    for token, file in sorted(embeddings, key=lambda e: len(e[0]), reverse=True):
        text = re.sub(rf"(?<![\w<:-]){re.escape(token)}(?![\w>-])", lambda _m: f"embedding:{file.name}", text,
                      flags=re.IGNORECASE)
    return text


# --- model files from catalog versions -------------------------------------------------------
def download_remote(catalog, remote: str | None) -> RemoteRecord | None:
    """The mirror whose URLs go into ``properties.models``: the one named, else the only
    ``mirror`` remote (several: none is guessed)."""
    if remote:
        record = get_remote(catalog, remote)
        if record.kind != "mirror":
            raise UsageError(f"remote {remote!r} is of kind {record.kind}; download URLs come from a "
                             "mirror remote (a `loradex serve`)")
        return record
    mirrors = [r for r in list_remotes(catalog) if r.kind == "mirror"]
    return mirrors[0] if len(mirrors) == 1 else None


def model_file(version, kind: str, remote: RemoteRecord | None) -> ModelFile:
    """How ComfyUI names ``version`` in its folder, with its SHA256 and a download URL."""
    from ..remotes.hub import split_remote_url

    suffix = Path(version.file_name).suffix or ".safetensors"
    name = f"{version.adapter}{suffix}"  # the name `loradex export --layout comfyui` writes
    url = None
    if remote is not None and split_remote_url(remote.url)[1]:
        # `loradex push` puts the file as stored at NAME.safetensors of repo NAMESPACE/NAME, tag vX.Y.Z
        url = (f"{remote.url.rstrip('/')}/{quote(version.adapter)}/resolve/v{quote(version.version)}/"
               f"{quote(version.adapter)}.safetensors")
    if url is None:
        civ = (version.extra or {}).get("civitai") or {}
        url = civ.get("downloadUrl") if isinstance(civ.get("downloadUrl"), str) else None
    return ModelFile(name=name, directory=DIRECTORIES.get(kind, "loras"), sha256=version.sha256, url=url)


def base_file(catalog, ref: str, sha256: str | None, remote: RemoteRecord | None) -> ModelFile:
    """The checkpoint: a catalog version when ``ref`` names one, else the file ``ref`` names
    (a path or hub id: its last segment), with the SHA256 the caller knows."""
    from ..errors import LoradexError

    try:
        return model_file(catalog.resolve(ref), "checkpoint", remote)
    except (NotFound, LoradexError):
        pass
    name = ref.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1] or "model"
    if not Path(name).suffix:
        name += ".safetensors"
    return ModelFile(name=name, directory="checkpoints", sha256=sha256 if sha256 and len(sha256) == 64 else None)


TINY_PREFIX = "tiny-"  # trainer.tiny_pipeline's in-process bases: tiny-<family>


def base_family(catalog, ref: str, recorded: str | None = None) -> str | None:
    """The family of the base ``ref``: the one a prompt record recorded, a catalog checkpoint's
    base, ``tiny-<family>``, or a local diffusers folder's pipeline class (its ``model_index.json``,
    read as untrusted JSON); None when none says (a single file keeps the one-node loader)."""
    from loradex.families import aspects, find_family

    from ..errors import LoradexError
    from ..untrusted import read_json_file

    if recorded and find_family(recorded) is not None:
        return recorded
    try:
        version = catalog.resolve(ref)
        return catalog.get_adapter(version.adapter).base
    except (NotFound, LoradexError):
        pass
    if ref.startswith(TINY_PREFIX) and find_family(ref[len(TINY_PREFIX):]) is not None:
        return ref[len(TINY_PREFIX):]
    index_path = Path(ref) / "model_index.json"
    if not index_path.is_file():
        return None
    index = read_json_file(index_path, max_bytes=1 << 16)
    class_name = index.get("_class_name") if isinstance(index, dict) else None
    for family, module in aspects("pipeline"):
        if class_name in getattr(module, "PIPELINE_CLASSES", ()):
            return family.name
    return None


def workflow_from_record(catalog, record: dict, *, remote: str | None = None) -> dict:
    """The workflow that re-makes a prompt record (``generate --save-workflow``)."""
    mirror = download_remote(catalog, remote)
    base = record.get("base") or {}
    loras = []
    for entry in record.get("stack") or []:
        version = catalog.resolve(entry["ref"])
        kind = catalog.get_adapter(version.adapter).kind
        loras.append((model_file(version, kind, mirror), entry["unet_weight"], entry["te_weight"]))
    embeddings = [(e["token"], model_file(catalog.resolve(e["ref"]), "embedding", mirror))
                  for e in record.get("embeddings") or []]
    spec = WorkflowSpec(base=base_file(catalog, base.get("ref") or "model", base.get("sha256"), mirror),
                        family=base_family(catalog, base.get("ref") or "model", base.get("family")),
                        embeddings=embeddings,
                        positive=record.get("clean_prompt") or "", negative=record.get("negative_prompt") or "",
                        loras=loras, seed=record.get("seed", 0), steps=record.get("steps") or 20,
                        cfg=record.get("cfg") or 7.0, width=record.get("width") or 512,
                        height=record.get("height") or 512, scheduler=(record.get("scheduler") or {}).get("name"))
    return build_workflow(spec)


def write_workflow(dest, workflow: dict) -> Path:
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(dest) as fh:
        fh.write(json.dumps(workflow, indent=2, ensure_ascii=False).encode("utf-8") + b"\n")
    return dest
