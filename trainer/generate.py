"""``generate``: prompt with ``<lora:NAME@REF:W>`` tags → image + a prompt record naming exact
versions; ``render_record``: re-run a record and say whether the pixels are the same.

A ``Generator`` keeps one base pipeline and one ``AdapterStack`` across calls, so eval suites and
galleries load each adapter file once and only change weights between renders.
Catalog files are blobs without a suffix; diffusers picks its reader by suffix, so each blob is
exposed through a symlink ``$LORADEX_HOME/cache/files/<sha256><suffix>``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from loradex.registry.errors import IncompatibleAdapters, NotFound, UsageError

LIBRARIES = ("torch", "diffusers", "peft", "transformers", "loradex")


@dataclass
class GenerateSettings:
    negative: str = ""
    seed: int = 0
    steps: int | None = None      # None: the base family's default (20 for SD, 28 for Flux/SD3)
    cfg: float | None = None      # None: the family's default (7 for SD/SD3, 3.5 for Flux's distilled guidance)
    width: int = 512
    height: int = 512
    scheduler: str | None = None  # a name from trainer.render.SCHEDULERS; None = the base's own
    # the family's own settings (trainer.render.RenderProfile: max_sequence_length, shift …);
    # missing ones take the family's defaults
    fields: dict = field(default_factory=dict)


@dataclass
class ResolvedAdapter:
    """One stack entry: what the prompt asked for and the exact version it resolved to."""

    requested: str
    version: object  # registry Version
    te_weight: float
    unet_weight: float
    kind: str = "lora"
    token: str | None = None

    def record_entry(self, conversion: dict | None = None) -> dict:
        """``conversion``: how the stack made the file loadable (``trainer.stacking``), if it had to."""
        entry = {"requested": self.requested, "ref": self.version.ref, "sha256": self.version.sha256,
                 "autov3": (self.version.autov3 or "")[:12] or None, "kind": self.kind,
                 "te_weight": float(self.te_weight), "unet_weight": float(self.unet_weight)}
        if conversion:
            entry["conversion"] = dict(conversion)
        return entry


@dataclass
class GenerateResult:
    image: object  # PIL.Image
    record: object  # registry.records.PromptRecord (or an unsaved one when store=False)
    png: bytes
    loaded: list = field(default_factory=list)


@dataclass(frozen=True)
class ReferenceImage:
    """A ``--reference`` image: stored as a blob, named in the record by its file sha256."""

    path: str
    data: bytes

    @property
    def sha256(self) -> str:
        import hashlib

        return hashlib.sha256(self.data).hexdigest()

    def entry(self) -> dict:
        return {"sha256": self.sha256, "path": self.path}


def load_references(paths) -> list[ReferenceImage]:
    """Read each ``--reference`` file, refusing (one line, naming it) what is not a readable image."""
    import io

    from PIL import Image, UnidentifiedImageError

    from loradex.registry.errors import InvalidFile

    out = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise InvalidFile(path, "reference image not found", hint="give the path of a PNG/JPEG/WebP image")
        data = path.read_bytes()
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InvalidFile(path, f"is not a readable image ({exc.__class__.__name__})",
                              hint="give a PNG/JPEG/WebP image as --reference") from None
        out.append(ReferenceImage(str(path), data))
    return out


def library_versions(names=LIBRARIES) -> dict[str, str]:
    """Installed versions of ``names`` (those not installed are left out)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _jsonable(value):
    """Scheduler configs hold tuples, numpy scalars and the like: make them plain JSON."""
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def blob_as_file(catalog, version) -> Path:
    """A path ending in the version's own suffix that points at its blob."""
    suffix = "".join(Path(version.file_name).suffixes[-1:]) or ".safetensors"
    folder = catalog.home / "cache" / "files"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / f"{version.sha256}{suffix}"
    target = catalog.blobs.path_for(version.sha256)
    if not target.is_file():
        raise NotFound(f"blob of {version.ref} is missing", hint="run `loradex verify`")
    if not link.is_symlink() or os.readlink(link) != str(target):
        tmp = folder / f".{version.sha256}{suffix}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, link)
    return link


class Generator:
    """One loaded base + adapter stack; ``generate`` and ``render_entries`` reuse both."""

    def __init__(self, catalog, base: str, *, dtype=None, device: str = "cpu", allow_partial: bool = False):
        from loradex.trainer.base_loader import load_any_base
        from loradex.trainer.stacking import AdapterStack

        self.catalog = catalog
        self.base_ref = base
        self.pipe, self.base, _ = load_any_base(base, catalog, dtype=dtype)
        if device != "cpu":
            self.pipe.to(device)
        self.stack = AdapterStack(self.pipe, allow_partial=allow_partial,
                                  cache_dir=catalog.home / "cache" / "stack")
        from loradex.trainer.render import render_profile

        self.profile = render_profile(self.base.family)

    def effective(self, settings: GenerateSettings) -> GenerateSettings:
        """``settings`` with every default filled in from the base's family (what is recorded)."""
        from dataclasses import replace

        defaults = self.profile.defaults
        return replace(settings,
                       steps=int(settings.steps if settings.steps is not None else defaults["steps"]),
                       cfg=float(settings.cfg if settings.cfg is not None else defaults["cfg"]),
                       fields=self.profile.resolve_fields(dict(settings.fields), self.pipe.scheduler))

    # -- resolving ---------------------------------------------------------------------------
    def resolve_prompt(self, prompt: str) -> tuple[str, list[ResolvedAdapter]]:
        """Parse tags, resolve each against the catalog (exact versions), find embeddings."""
        from loradex.merge.conventions.prompt_syntax import check_refs, parse_prompt

        tokens = self._embedding_tokens()
        parsed = parse_prompt(prompt, known_tokens=tokens)
        versions = check_refs(prompt, parsed, self.catalog.resolve)
        out = [ResolvedAdapter(tag.ref_string, v, tag.te_weight, tag.unet_weight,
                               kind="embedding" if self._kind(v) == "embedding" else "lora")
               for tag, v in zip(parsed.loras, versions)]
        for emb in parsed.embedding_tokens:
            if emb.known:
                name = tokens[emb.token.lower()]
                version = self.catalog.resolve(name)
                if not any(r.version.ref == version.ref for r in out):
                    out.append(ResolvedAdapter(emb.token, version, 1.0, 1.0, kind="embedding", token=emb.token))
        self._check_families(out)
        return parsed.clean_prompt, out

    def _kind(self, version) -> str:
        return self.catalog.get_adapter(version.adapter).kind

    def _embedding_tokens(self) -> dict[str, str]:
        """token (lower-case) → embedding adapter name: ``<name>`` and stored trigger words."""
        out = {}
        for summary in self.catalog.list_adapters():
            if summary.kind != "embedding" or not summary.latest:
                continue
            out[f"<{summary.name}>"] = summary.name
            for word in self.catalog.resolve(summary.name).trigger_words:
                out[word.lower()] = summary.name
        return out

    def _check_families(self, adapters: list[ResolvedAdapter]) -> None:
        from loradex.families import require
        from loradex.trainer.compat_check import adapter_family, check_base_family

        for adapter in adapters:  # a family loradex only recognises: one line, before any load
            require(adapter_family(self.catalog, adapter.version), "stack")
        check_base_family(self.catalog, self.base_ref, self.base.family, [a.version for a in adapters])

    def check_compat(self, adapters: list[ResolvedAdapter]) -> dict:
        """The pre-render compatibility check (trainer.compat_check), once per distinct stack."""
        from loradex.trainer.compat_check import stack_compat

        key = tuple((a.version.ref, a.te_weight, a.unet_weight, a.kind) for a in adapters)
        cache = self.__dict__.setdefault("_compat_cache", {})
        if key not in cache:
            cache[key] = stack_compat(self.catalog, self.base_ref, self.base.family, adapters)
        return cache[key]

    # -- rendering ---------------------------------------------------------------------------
    def _apply(self, adapters: list[ResolvedAdapter]):
        from loradex.trainer.stacking import StackEntry

        entries = [StackEntry(adapter_name=a.version.ref, file_path=blob_as_file(self.catalog, a.version),
                              te_weight=a.te_weight, unet_weight=a.unet_weight, kind=a.kind,
                              token=a.token) for a in adapters]
        return self.stack.apply(entries)

    def render_entries(self, clean_prompt: str, adapters: list[ResolvedAdapter], settings: GenerateSettings,
                       progress=None):
        from loradex.trainer.render import render

        settings = self.effective(settings)
        loaded = self._apply(adapters)
        image = render(self.pipe, clean_prompt, negative=settings.negative or None, seed=settings.seed,
                       steps=settings.steps, cfg=settings.cfg, width=settings.width, height=settings.height,
                       scheduler=settings.scheduler, progress=progress, fields=settings.fields,
                       profile=self.profile)
        return image, loaded

    def scheduler_config(self, settings: GenerateSettings) -> dict:
        from loradex.trainer.render import scheduler_for

        sched = scheduler_for(self.pipe, settings.scheduler, settings.fields, self.profile)
        return {"class": type(sched).__name__, **_jsonable(dict(sched.config))}

    def build_record(self, *, prompt: str, clean_prompt: str, adapters: list[ResolvedAdapter],
                     settings: GenerateSettings, image, source: str, references=None, notes: str = "",
                     loaded=()) -> dict:
        """``loaded``: the stack's LoadedAdapters for this render (their conversions are recorded)."""
        from loradex.registry.paths import current_user
        from loradex.registry.catalog.records import RECORD_SCHEMA, new_record_id, now_iso
        from loradex.trainer.render import image_sha256

        settings = self.effective(settings)
        denoiser = getattr(self.pipe, self.profile.denoiser)
        conversions = {a.adapter_name: a.conversion for a in loaded if getattr(a, "conversion", None)}
        record = {
            "schema": RECORD_SCHEMA, "id": new_record_id(), "source": source, "prompt": prompt,
            "clean_prompt": clean_prompt, "negative_prompt": settings.negative or "",
            "seed": int(settings.seed), "steps": int(settings.steps), "cfg": float(settings.cfg),
            "width": int(settings.width), "height": int(settings.height),
            "scheduler": {"name": settings.scheduler, "config": self.scheduler_config(settings)},
            "base": {"ref": self.base.ref, "family": self.base.family, "sha256": self.base.hash},
            "stack": [a.record_entry(conversions.get(a.version.ref)) for a in adapters if a.kind != "embedding"],
            "embeddings": [{"token": a.token or f"<{a.version.adapter}>", "ref": a.version.ref,
                            "sha256": a.version.sha256} for a in adapters if a.kind == "embedding"],
            "dtype": str(denoiser.dtype).removeprefix("torch."), "device": str(denoiser.device),
            "libraries": library_versions(), "image_sha256": image_sha256(image),
            "created_at": now_iso(), "created_by": current_user(),
        }
        family_settings = self.profile.record_fields(settings.fields)
        if family_settings is not None:
            record["family_settings"] = family_settings
        if references:
            record["references"] = list(references)
        if notes:
            record["notes"] = notes
        return record

    def generate(self, prompt: str, settings: GenerateSettings, *, source: str = "generate",
                 store: bool = True, references: list[ReferenceImage] = (), notes: str = "",
                 progress=None) -> GenerateResult:
        """Render ``prompt`` and (``store``) save the image + its record in the catalog (with the
        ``references`` images as blobs the record names)."""
        from loradex.registry.catalog.records import PromptRecord, png_with_record, store_record

        clean, adapters = self.resolve_prompt(prompt)
        compat = self.check_compat(adapters) if adapters else None  # before any render
        image, loaded = self.render_entries(clean, adapters, settings, progress=progress)
        record = self.build_record(prompt=prompt, clean_prompt=clean, adapters=adapters, settings=settings,
                                   image=image, source=source, references=[r.entry() for r in references],
                                   notes=notes, loaded=loaded)
        if compat is not None:
            record["compat"] = compat
        png = png_with_record(image, record)
        if store:
            saved = store_record(self.catalog, record, png, attachments=[r.data for r in references])
        else:
            from loradex.schemas import validate

            validate("prompt-record", record)
            saved = PromptRecord(record["id"], record, None, None, record["created_by"])
        return GenerateResult(image, saved, png, loaded)


def generate(catalog, prompt: str, *, base: str, settings: GenerateSettings | None = None,
             out: str | os.PathLike | None = None, allow_partial: bool = False, progress=None,
             references=(), notes: str = "", save_workflow: str | os.PathLike | None = None,
             workflow_remote: str | None = None) -> GenerateResult:
    """One-shot ``loradex generate``: render, store the record, write ``out`` (PNG carrying it).
    ``references``: image paths the record names (stored as blobs); ``notes``: free text;
    ``save_workflow``: also write the ComfyUI workflow that re-makes it (download URLs from the
    mirror remote ``workflow_remote``, default the only one)."""
    refs = load_references(references)  # before loading anything: a bad file fails fast
    result = Generator(catalog, base, allow_partial=allow_partial).generate(
        prompt, settings or GenerateSettings(), progress=progress, references=refs, notes=notes.strip())
    if out is not None:
        write_png(out, result.png)
    if save_workflow is not None:
        from loradex.registry.folders.comfyui_workflow_export import workflow_from_record, write_workflow

        write_workflow(save_workflow, workflow_from_record(catalog, result.record.record, remote=workflow_remote))
    return result


def write_png(dest, data: bytes) -> Path:
    from loradex.registry.files.atomic_files import atomic_output

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(dest) as fh:
        fh.write(data)
    return dest


# --- re-rendering a record ------------------------------------------------------------------

@dataclass
class RenderCheck:
    record_id: str
    identical: bool
    max_abs_diff: int  # over 8-bit channels; 0 when identical
    image_sha256: str
    recorded_sha256: str | None
    differences: dict = field(default_factory=dict)  # environment differences (libraries, base…)
    output: str | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _settings_of(record: dict) -> GenerateSettings:
    missing = [k for k in ("seed", "steps", "cfg", "width", "height") if record.get(k) is None]
    if missing:
        raise UsageError(f"record {record['id']} lacks {', '.join(missing)}; it cannot be re-rendered")
    fields = {k: v for k, v in (record.get("family_settings") or {}).items() if k != "guidance"}
    return GenerateSettings(negative=record["negative_prompt"], seed=record["seed"], steps=record["steps"],
                            cfg=record["cfg"], width=record["width"], height=record["height"],
                            scheduler=record["scheduler"]["name"], fields=fields)


def _exact_adapters(catalog, record: dict) -> list[ResolvedAdapter]:
    """The record's stack at the exact versions it names; a changed file is an error."""
    out = []
    # a train-sample record of a TI run names its embedding in the stack too (that links the record
    # to the version); the "embeddings" entry, which carries the token, is the one that loads it
    embedding_refs = {e.get("ref") for e in record["embeddings"]}
    entries = [(e, "lora") for e in record["stack"]
               if not (e.get("kind") == "embedding" and e.get("ref") in embedding_refs)]
    entries += [(e, "embedding") for e in record["embeddings"]]
    for entry, kind in entries:
        if not entry.get("ref"):
            raise UsageError(f"record {record['id']}: {entry.get('requested') or entry.get('token')} was never "
                             "resolved to a catalog version; it cannot be re-rendered")
        version = catalog.resolve(entry["ref"])
        if entry.get("sha256") and version.sha256 != entry["sha256"]:
            raise IncompatibleAdapters(f"{entry['ref']} now has sha256 {version.sha256[:12]}…, the record "
                                       f"used {entry['sha256'][:12]}…")
        if kind == "lora":
            out.append(ResolvedAdapter(entry["requested"], version, entry["te_weight"], entry["unet_weight"],
                                       kind=entry.get("kind", "lora")))
        else:
            out.append(ResolvedAdapter(entry["token"], version, 1.0, 1.0, kind="embedding", token=entry["token"]))
    return out


def render_record(catalog, record_id: str, *, out: str | os.PathLike | None = None,
                  generator: Generator | None = None, progress=None) -> RenderCheck:
    """Re-run a stored record and compare with its stored image (pixel hash, max abs diff)."""
    import numpy as np
    from PIL import Image
    import io

    from loradex.registry.catalog.records import get_record, png_with_record, record_png_bytes
    from loradex.trainer.render import image_sha256

    stored = get_record(catalog, record_id)
    record = stored.record
    base = record["base"]["ref"]
    if not base:
        raise UsageError(f"record {record['id']} does not name its base model")
    generator = generator or Generator(catalog, base)
    adapters = _exact_adapters(catalog, record)
    image, _ = generator.render_entries(record["clean_prompt"], adapters, _settings_of(record), progress=progress)
    new_sha = image_sha256(image)
    differences = {}
    if record["base"]["sha256"] and generator.base.hash != record["base"]["sha256"]:
        differences["base_sha256"] = {"recorded": record["base"]["sha256"], "now": generator.base.hash}
    now_libs = library_versions()
    for name, was in (record.get("libraries") or {}).items():
        if now_libs.get(name) != was:
            differences[name] = {"recorded": was, "now": now_libs.get(name)}
    max_diff = 0
    if stored.image_blob:
        with Image.open(io.BytesIO(record_png_bytes(catalog, stored))) as old:
            a = np.asarray(old.convert("RGB"), dtype=np.int16)
        b = np.asarray(image.convert("RGB"), dtype=np.int16)
        max_diff = int(np.abs(a - b).max()) if a.shape == b.shape else 255
    identical = new_sha == record["image_sha256"]
    if identical:
        max_diff = 0
    written = None
    if out is not None:
        carried = record if identical else {
            **record, "image_sha256": new_sha,
            "notes": f"re-render of record {record['id']}: differs (max abs diff {max_diff})"}
        written = str(write_png(out, png_with_record(image, carried)))
    return RenderCheck(record["id"], identical, max_diff, new_sha, record["image_sha256"], differences, written)
