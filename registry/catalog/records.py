"""Evidence in the catalog: prompt records (with their images), evaluation cards, the PNG text
chunks that carry a record outside loradex, importing A1111/ComfyUI PNGs, and the promotion gate.

A record's image is a PNG blob whose text chunks hold the record twice: A1111's ``parameters``
line (so A1111, Civitai and ComfyUI readers understand it) and our JSON under ``loradex``.
``PromptRecordRow.image_sha256`` is that blob's sha256 (gc keeps it); the record's own
``image_sha256`` hashes the decoded pixels, which stays the same whatever text is embedded.
Imports no torch: pillow is imported inside the functions that need it.
"""

from __future__ import annotations

import io
import json
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import search_index
from .store import resolve_in
from .db_schema import AdapterRow, AliasPolicyRow, EvalCardRow, PromptRecordRow, PromptRecordVersionRow, VersionRow
from ..errors import AmbiguousRef, Conflict, InvalidFile, NotFound, UnsupportedFormat, UntrustedData
from ..paths import current_user
from .refs import parse_ref
from ..untrusted import parse_json

RECORD_SCHEMA = "loradex.prompt-record/1"
CARD_SCHEMA = "loradex.eval-card/1"
PNG_RECORD_KEY = "loradex"
PNG_A1111_KEY = "parameters"
MAX_PNG_BYTES = 256 << 20  # a PNG to import (A1111/ComfyUI images are a few MB)
MAX_GRAPH_STEPS = 10_000  # links followed through a ComfyUI graph (a cycle must end)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def new_record_id() -> str:
    return uuid.uuid4().hex[:16]


# --- entities ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PromptRecord:
    id: str
    record: dict
    image_blob: str | None  # sha256 of the PNG file in the blob store
    created_at: datetime
    created_by: str
    versions: tuple[str, ...] = ()  # NAME@X.Y.Z of the catalog versions in its stack

    def to_dict(self) -> dict:
        return {"id": self.id, "image_blob": self.image_blob, "versions": list(self.versions),
                "record": self.record}


@dataclass(frozen=True)
class EvalCard:
    id: int
    ref: str
    card: dict
    passed: bool | None
    created_at: datetime
    created_by: str

    def to_dict(self) -> dict:
        return {"id": self.id, "ref": self.ref, "passed": self.passed, "card": self.card}


def _validate(name: str, data: dict) -> None:
    from loradex.schemas import validate

    validate(name, data)


# --- prompt records ----------------------------------------------------------------------------

def store_record(catalog, record: dict, png: bytes | None = None, *, attachments: list[bytes] = ()) -> PromptRecord:
    """Validate ``record``, store ``png`` (already carrying the record's text chunks) as a blob,
    and insert the row plus one link per catalog version named in its stack. ``attachments``: the
    bytes of the record's ``references`` images, stored as blobs under the same lock (gc keeps them
    through ``maintenance``'s prompt-record-references referencer)."""

    _validate("prompt-record", record)
    named = {r["sha256"] for r in record.get("references", [])}
    with catalog.blobs.writing():
        for data in attachments:
            if catalog.blobs.add_bytes(data).hashes.sha256 not in named:
                raise ValueError("an attachment is not among the record's references")
        blob = catalog.blobs.add_bytes(png).hashes.sha256 if png is not None else None

        def write(s: Session) -> PromptRecord:
            if s.get(PromptRecordRow, record["id"]) is not None:
                raise Conflict(f"prompt record {record['id']} already exists")
            created = datetime.fromisoformat(record["created_at"])
            s.add(PromptRecordRow(id=record["id"], record=record, image_sha256=blob, created_at=created,
                                  created_by=record["created_by"]))
            s.flush()
            refs = []
            stack = _stack_versions(s, record)
            for vid, ref in stack.items():
                s.add(PromptRecordVersionRow(record_id=record["id"], version_id=vid))
                refs.append(ref)
            search_index.refresh_versions(s, stack)  # the record's prompt is in their documents
            return PromptRecord(record["id"], record, blob, created, record["created_by"], tuple(refs))

        return catalog.transact(write)


def _stack_versions(s: Session, record: dict) -> dict[int, str]:
    """Catalog versions of a record's stack (entries whose exact ref still resolves)."""
    out: dict[int, str] = {}
    for entry in record.get("stack", []):
        if not entry.get("ref"):
            continue
        try:
            row = resolve_in(s, parse_ref(entry["ref"]))
        except (NotFound, ValueError):
            continue
        if entry.get("sha256") and row.sha256 != entry["sha256"]:
            continue  # a different file under the same name: not this record's version
        out[row.id] = f"{s.get(AdapterRow, row.adapter_id).name}@{row.version}"
    return out


def _record_entity(s: Session, row: PromptRecordRow) -> PromptRecord:
    refs = s.execute(
        select(AdapterRow.name, VersionRow.version)
        .join(VersionRow, VersionRow.adapter_id == AdapterRow.id)
        .join(PromptRecordVersionRow, PromptRecordVersionRow.version_id == VersionRow.id)
        .where(PromptRecordVersionRow.record_id == row.id)
        .order_by(AdapterRow.name, VersionRow.sort_key)
    ).all()
    return PromptRecord(row.id, dict(row.record), row.image_sha256, row.created_at, row.created_by,
                        tuple(f"{n}@{v}" for n, v in refs))


def get_record(catalog, record_id: str) -> PromptRecord:
    """A record by id or a unique id prefix (≥ 4 characters)."""

    def run(s: Session) -> PromptRecord:
        row = s.get(PromptRecordRow, record_id)
        if row is None and len(record_id) >= 4:
            rows = s.scalars(select(PromptRecordRow).where(PromptRecordRow.id.like(record_id + "%"))
                             .limit(2)).all()
            if len(rows) > 1:
                raise AmbiguousRef(f"record id prefix {record_id!r} matches several records",
                                   hint="give more characters")
            row = rows[0] if rows else None
        if row is None:
            raise NotFound(f"no prompt record {record_id!r}", hint="see `loradex records list`")
        return _record_entity(s, row)

    return catalog.read(run)


def list_records(catalog, ref: str | None = None, *, limit: int | None = None) -> list[PromptRecord]:
    """Newest first; with ``ref``, only records whose stack used that exact version."""

    def run(s: Session) -> list[PromptRecord]:
        q = select(PromptRecordRow)
        if ref is not None:
            version = resolve_in(s, parse_ref(ref))
            q = q.join(PromptRecordVersionRow, PromptRecordVersionRow.record_id == PromptRecordRow.id) \
                 .where(PromptRecordVersionRow.version_id == version.id)
        q = q.order_by(PromptRecordRow.created_at.desc(), PromptRecordRow.id)
        if limit:
            q = q.limit(limit)
        return [_record_entity(s, row) for row in s.scalars(q)]

    return catalog.read(run)


def record_png_bytes(catalog, record: PromptRecord) -> bytes:
    if record.image_blob is None:
        raise NotFound(f"prompt record {record.id} has no stored image")
    with catalog.blobs.open(record.image_blob) as fh:
        return fh.read()


# --- PNG text chunks ---------------------------------------------------------------------------

def a1111_parameters(record: dict) -> str:
    """A1111's ``parameters`` text: prompt, ``Negative prompt:`` line, then ``Key: value, …``."""
    fields = [("Steps", record.get("steps")), ("Sampler", (record.get("scheduler") or {}).get("name")),
              ("CFG scale", record.get("cfg")), ("Seed", record.get("seed"))]
    if record.get("width") and record.get("height"):
        fields.append(("Size", f"{record['width']}x{record['height']}"))
    base = record.get("base") or {}
    if base.get("sha256"):
        fields.append(("Model hash", base["sha256"][:10]))
    if base.get("ref"):
        fields.append(("Model", base["ref"]))
    loras = [(e.get("ref") or e["requested"], e.get("autov3") or (e.get("sha256") or "")[:12])
             for e in record.get("stack", [])]
    if loras:
        fields.append(("Lora hashes", '"' + ", ".join(f"{_a1111_lora_name(r)}: {h}" for r, h in loras) + '"'))
    fields.append(("Version", f"loradex {(record.get('libraries') or {}).get('loradex', '')}".strip()))
    tail = ", ".join(f"{k}: {v}" for k, v in fields if v is not None and v != "")
    lines = [record.get("prompt", "")]
    if record.get("negative_prompt"):
        lines.append(f"Negative prompt: {record['negative_prompt']}")
    lines.append(tail)
    return "\n".join(lines)


def _a1111_lora_name(ref: str) -> str:
    return ref.replace("@", "_").replace(":", "_").replace(",", "_")


def png_with_record(image, record: dict) -> bytes:
    """PNG bytes of a PIL image with the record as text chunks (``parameters`` + ``loradex``)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(PNG_A1111_KEY, a1111_parameters(record))
    info.add_itxt(PNG_RECORD_KEY, json.dumps(record, sort_keys=True, separators=(",", ":")))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def png_text(path_or_bytes, *, source: str | None = None) -> dict[str, str]:
    """Every text chunk (tEXt, zTXt, iTXt) of a PNG. A file that is not a whole PNG (truncated,
    a bad chunk, a decompression bomb) is an :class:`InvalidFile` naming ``source``."""
    import struct
    import zlib

    from PIL import Image, UnidentifiedImageError

    is_bytes = isinstance(path_or_bytes, (bytes, bytearray))
    label = source or ("PNG data" if is_bytes else str(path_or_bytes))
    src = io.BytesIO(path_or_bytes) if is_bytes else path_or_bytes
    try:
        with Image.open(src) as img:
            if img.format != "PNG":
                raise UnsupportedFormat(label, f"a {img.format} image, not a PNG")
            img.load()
            return {str(k): str(v) for k, v in (getattr(img, "text", None) or {}).items()}
    except UnidentifiedImageError:
        raise InvalidFile(label, "not an image") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
            Image.DecompressionBombError) as exc:  # pillow's words for a damaged or hostile PNG
        raise InvalidFile(label, f"a damaged PNG ({' '.join(str(exc).split())[:160] or type(exc).__name__})") from None


def record_from_png(path_or_bytes) -> dict | None:
    """The loradex record a PNG carries, or None."""
    text = png_text(path_or_bytes).get(PNG_RECORD_KEY)
    return json.loads(text) if text else None


# --- importing A1111 / ComfyUI PNGs --------------------------------------------------------------

_A1111_PAIR_RE = re.compile(r'\s*([\w \-/]+):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
_A1111_LORA_RE = re.compile(r"<(?:lora|lyco):([^:>]+)(?::([^:>]*))?(?::([^:>]*))?>", re.IGNORECASE)


def parse_a1111_parameters(text: str) -> dict:
    """Split A1111's ``parameters`` text into prompt, negative prompt and its key/value pairs
    (the last line holding ``Steps:`` is the settings line, as A1111's own reader does)."""
    lines = text.strip().split("\n")
    settings_at = max((i for i, line in enumerate(lines) if re.match(r"\s*Steps:\s*\d", line)), default=None)
    settings = {}
    if settings_at is not None:
        for key, value in _A1111_PAIR_RE.findall(lines[settings_at]):
            value = value.strip()
            if value.startswith('"') and value.endswith('"'):
                try:
                    value = json.loads(value) if value.count('"') >= 2 else value.strip('"')
                except ValueError:  # not a JSON string after all ("\x"): keep the text
                    value = value.strip('"')
                if not isinstance(value, str):
                    value = str(value)
            settings[key.strip()] = value
        lines = lines[:settings_at]
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    return {"prompt": "\n".join(prompt).strip(), "negative_prompt": "\n".join(negative).strip(),
            "settings": settings}


def _int(value) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _float(value) -> float | None:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _empty_record(source: str, path: Path) -> dict:
    return {"schema": RECORD_SCHEMA, "id": new_record_id(), "source": source, "prompt": "",
            "clean_prompt": "", "negative_prompt": "", "seed": None, "steps": None, "cfg": None,
            "width": None, "height": None, "scheduler": {"name": None, "config": {}},
            "base": {"ref": None, "family": None, "sha256": None}, "stack": [], "embeddings": [],
            "dtype": None, "device": None, "libraries": {}, "image_sha256": None,
            "created_at": now_iso(), "created_by": current_user(),
            "imported": {"file": path.name}}


def _stack_from_hashes(catalog, names_weights: list[tuple[str, float, float]],
                       hashes: dict[str, str]) -> list[dict]:
    """Stack entries for imported loras: a name whose short hash matches a catalog version
    (AutoV3, A1111's "Lora hashes") resolves to that exact version; otherwise it stays unresolved."""
    stack = []
    for name, te, unet in names_weights:
        entry = {"requested": name, "ref": None, "sha256": None, "te_weight": te, "unet_weight": unet}
        short = hashes.get(name)
        if short:
            for kind in ("autov3", "sha256", "autov2"):
                try:
                    version = catalog.resolve(f"{kind}:{short.lower()}")
                except (NotFound, AmbiguousRef, ValueError):
                    continue
                entry.update(ref=version.ref, sha256=version.sha256)
                break
        stack.append(entry)
    return stack


def record_from_a1111(catalog, path: Path, text: str) -> dict:
    parsed = parse_a1111_parameters(text)
    s = parsed["settings"]
    record = _empty_record("import-a1111", path)
    loras = [(m.group(1).strip(), _float(m.group(2)) if m.group(2) else 1.0,
              _float(m.group(3)) if m.group(3) else (_float(m.group(2)) if m.group(2) else 1.0))
             for m in _A1111_LORA_RE.finditer(parsed["prompt"])]
    loras = [(n, te if te is not None else 1.0, u if u is not None else 1.0) for n, te, u in loras]
    lora_hashes = {}
    for pair in s.get("Lora hashes", "").split(","):
        name, _, short = pair.partition(":")
        if short.strip():
            lora_hashes[name.strip()] = short.strip()
    width, _, height = s.get("Size", "").partition("x")
    record.update(
        prompt=parsed["prompt"], clean_prompt=_A1111_LORA_RE.sub("", parsed["prompt"]).strip(" ,"),
        negative_prompt=parsed["negative_prompt"], seed=_int(s.get("Seed")), steps=_int(s.get("Steps")),
        cfg=_float(s.get("CFG scale")), width=_int(width), height=_int(height),
        scheduler={"name": s.get("Sampler"), "config": {k: s[k] for k in ("Schedule type",) if k in s}},
        base={"ref": s.get("Model"), "family": None,
              "sha256": s["Model hash"].lower() if re.fullmatch(r"[0-9a-fA-F]{8,64}", s.get("Model hash", "")) else None},
        stack=_stack_from_hashes(catalog, loras, lora_hashes),
    )
    record["imported"].update(parameters=text, extra={k: v for k, v in s.items()})
    return record


# ComfyUI API graph: {node_id: {"class_type": ..., "inputs": {...}}}; a link is [node_id, slot].
_COMFY_SAMPLERS = ("KSampler", "KSamplerAdvanced")


def _chunk_json(path: Path, chunk: str, text: str):
    """A PNG text chunk's JSON through the validation layer (size, depth, finite numbers)."""
    source = f"'{chunk}' chunk"
    try:
        return parse_json(text, source)
    except UntrustedData as exc:
        raise InvalidFile(path, f"its {exc.message}") from None


def _inputs(node) -> dict:
    value = node.get("inputs") if isinstance(node, dict) else None
    return value if isinstance(value, dict) else {}


def record_from_comfyui(catalog, path: Path, prompt_json: str, workflow_json: str | None) -> dict:
    graph = _chunk_json(path, "prompt", prompt_json)
    if not isinstance(graph, dict):
        raise InvalidFile(path, "ComfyUI 'prompt' chunk is not a JSON object of nodes")
    nodes = {str(k): v for k, v in graph.items() if isinstance(v, dict)}
    sampler = next((n for n in nodes.values() if n.get("class_type") in _COMFY_SAMPLERS), None)
    if sampler is None:
        raise UnsupportedFormat(path, "ComfyUI graph has no KSampler node", hint="nothing to import")

    def follow(value):
        return nodes.get(str(value[0])) if isinstance(value, list) and value else None

    def chain(value, link: str):
        """Nodes reached from ``value`` through ``link`` inputs, each once (a cycle ends)."""
        node, seen = follow(value), set()
        while node is not None and id(node) not in seen and len(seen) < MAX_GRAPH_STEPS:
            seen.add(id(node))
            yield node
            node = follow(_inputs(node).get(link))

    def text_of(value) -> str:
        node = next((n for n in chain(value, "conditioning") if "text" in _inputs(n)), None)
        return str(_inputs(node)["text"]) if node else ""

    inputs = _inputs(sampler)
    record = _empty_record("import-comfyui", path)
    loras, ckpt = [], None
    for node in chain(inputs.get("model"), "model"):  # walk the model chain back to the checkpoint loader
        ins = _inputs(node)
        if "lora_name" in ins:
            loras.append((Path(str(ins["lora_name"])).stem.lower(), _float(ins.get("strength_clip")) or 0.0,
                          _float(ins.get("strength_model")) or 0.0))
        if "ckpt_name" in ins:
            ckpt = str(ins["ckpt_name"])
            break
    size = _inputs(follow(inputs.get("latent_image")))
    positive = text_of(inputs.get("positive"))
    record.update(
        prompt=positive, clean_prompt=positive, negative_prompt=text_of(inputs.get("negative")),
        seed=_int(inputs.get("seed", inputs.get("noise_seed"))), steps=_int(inputs.get("steps")),
        cfg=_float(inputs.get("cfg")), width=_int(size.get("width")), height=_int(size.get("height")),
        scheduler={"name": inputs.get("sampler_name"),
                   "config": {"scheduler": inputs.get("scheduler"), "denoise": inputs.get("denoise")}},
        base={"ref": ckpt, "family": None, "sha256": None},
        stack=_stack_from_hashes(catalog, list(reversed(loras)), {}),
    )
    extra = {"prompt": graph}
    if workflow_json:
        try:
            extra["workflow"] = _chunk_json(path, "workflow", workflow_json)
        except InvalidFile:
            extra["workflow_text"] = workflow_json
    record["imported"]["extra"] = extra
    return record


def pixel_sha256(image) -> str:
    """What a record's ``image_sha256`` means (the same definition as
    ``loradex.trainer.render.image_sha256``): sha256 of ``b"RGB <w>x<h>\\n"`` + the RGB pixel
    bytes, independent of PNG compression and text chunks."""
    import hashlib

    rgb = image.convert("RGB")
    digest = hashlib.sha256(f"RGB {rgb.width}x{rgb.height}\n".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


def _pixel_sha256(data: bytes) -> str:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return pixel_sha256(img)


# Which chunk a PNG's record comes from, tried in order: our own, A1111, ComfyUI.
PngImporter = Callable[[object, Path, dict], "dict | None"]
PNG_IMPORTERS: dict[str, PngImporter] = {}


def register_png_importer(name: str):
    def deco(fn: PngImporter) -> PngImporter:
        PNG_IMPORTERS[name] = fn
        return fn

    return deco


@register_png_importer("loradex")
def _import_loradex(catalog, path, text):
    if PNG_RECORD_KEY not in text:
        return None
    record = _chunk_json(path, PNG_RECORD_KEY, text[PNG_RECORD_KEY])
    if not isinstance(record, dict):
        raise InvalidFile(path, f"its '{PNG_RECORD_KEY}' chunk is not a prompt record (a JSON object)")
    _validate("prompt-record", record)
    return record


@register_png_importer("a1111")
def _import_a1111(catalog, path, text):
    return record_from_a1111(catalog, path, text[PNG_A1111_KEY]) if PNG_A1111_KEY in text else None


@register_png_importer("comfyui")
def _import_comfyui(catalog, path, text):
    return record_from_comfyui(catalog, path, text["prompt"], text.get("workflow")) if "prompt" in text else None


def import_png(catalog, path) -> PromptRecord:
    """Turn a PNG's embedded parameters into a stored record (the PNG itself becomes its image).
    A PNG written by loradex whose record is already in the catalog returns that record."""
    path = Path(path)
    if not path.is_file():
        raise InvalidFile(path, "no such file")
    if path.stat().st_size > MAX_PNG_BYTES:
        raise InvalidFile(path, f"{path.stat().st_size} bytes, over the {MAX_PNG_BYTES}-byte cap for a PNG to import")
    data = path.read_bytes()
    text = png_text(data, source=str(path))
    for name, importer in PNG_IMPORTERS.items():
        record = importer(catalog, path, text)
        if record is None:
            continue
        if name == "loradex":
            try:
                return get_record(catalog, record["id"])
            except NotFound:
                pass
        pixels = _pixel_sha256(data)
        if record.get("image_sha256") is None:
            record["image_sha256"] = pixels
        return store_record(catalog, record, data)
    raise UnsupportedFormat(path, "no A1111 'parameters', ComfyUI 'prompt' or loradex chunk in this PNG",
                            hint="only PNGs saved by A1111, ComfyUI or loradex carry their parameters")


# --- evaluation cards --------------------------------------------------------------------------

def store_card(catalog, card: dict) -> EvalCard:
    """Validate and store an evaluation card for the version it names (cards are append-only:
    the newest one is the version's card)."""
    _validate("eval-card", card)

    def write(s: Session) -> EvalCard:
        version = resolve_in(s, parse_ref(card["version"]["ref"]))
        if version.sha256 != card["version"]["sha256"]:
            raise Conflict(f"card is for sha256 {card['version']['sha256'][:12]}…, "
                           f"but {card['version']['ref']} is {version.sha256[:12]}…")
        row = EvalCardRow(version_id=version.id, card=card, passed=bool(card["passed"]),
                          created_at=datetime.fromisoformat(card["created_at"]), created_by=card["created_by"])
        s.add(row)
        s.flush()
        from .events import card_stored  # a card revising another is a review: review.added, same transaction

        card_stored(s, row.id, card)
        return EvalCard(row.id, card["version"]["ref"], card, row.passed, row.created_at, row.created_by)

    return catalog.transact(write)


def latest_card_row(s: Session, version_id: int) -> EvalCardRow | None:
    return s.scalar(select(EvalCardRow).where(EvalCardRow.version_id == version_id)
                    .order_by(EvalCardRow.id.desc()).limit(1))


def latest_card(catalog, ref: str) -> EvalCard:
    def run(s: Session) -> EvalCard:
        version = resolve_in(s, parse_ref(ref))
        row = latest_card_row(s, version.id)
        name = s.get(AdapterRow, version.adapter_id).name
        if row is None:
            raise NotFound(f"{name}@{version.version} has no evaluation card",
                           hint=f"run `loradex eval {name}@{version.version} --prompts SUITE.txt`")
        return EvalCard(row.id, f"{name}@{version.version}", dict(row.card), row.passed, row.created_at,
                        row.created_by)

    return catalog.read(run)


def card_markdown(card: dict) -> str:
    """The card as Markdown (what a Hugging Face model card embeds)."""
    lines = [f"## Evaluation of {card['version']['ref']}", "",
             f"**Overall: {'PASS' if card['passed'] else 'FAIL'}**"
             + (f" — {'; '.join(card['reasons'])}" if card["reasons"] else ""), "",
             f"Base: `{card['base']['ref']}` · prompts: {len(card['prompt_suite']['prompts'])} "
             f"· seeds: {', '.join(map(str, card['seeds']))} · embedder: {card['embedder']['model']}", "",
             "| metric | value | threshold | definition |", "|---|---|---|---|"]
    for name, metric in card["metrics"].items():
        value = f"{metric['value']:.4f}" if metric["value"] is not None else f"— ({metric.get('note', '')})"
        limit = card["thresholds"].get(name, {})
        bound = " ".join(f"{k} {v}" for k, v in limit.items())
        lines.append(f"| {name} | {value} | {bound} | {metric['definition']} |")
    lines += ["", "| failure check | status | note |", "|---|---|---|"]
    for name, check in card["failure_checks"].items():
        lines.append(f"| {name} | {check['status']} | {check['note']} |")
    data = training_data_lines(card)
    if data:
        lines += ["", data[0], *(f"- warning: {w}" for w in data[1:])]
    note = card.get("technical_note") or {}
    if note:
        lines += ["", "Technical note: " + ", ".join(f"{k}={v}" for k, v in note.items() if v not in (None, [], ""))]
    return "\n".join(lines) + "\n" + review_markdown(card)


def training_data_lines(card: dict) -> list[str]:
    """"Training data: dataset:NAME@X.Y.Z (N images)" then each warning the data check gave
    (``inputs.training_data``, written by eval from the version's lineage); [] when unknown."""
    data = (card.get("inputs") or {}).get("training_data")
    if not data:
        return []
    count = f" ({data['num_images']} images)" if data.get("num_images") is not None else ""
    return [f"Training data: {data.get('ref') or 'a folder'}{count}", *data.get("warnings", [])]


def review_markdown(card: dict) -> str:
    """The human part of the card (verdicts, candidates, checks set by a person) as Markdown;
    ``card_markdown`` ends with it, so ``card --markdown`` and the pushed model card agree."""
    out = []
    if card.get("human_verdicts"):
        out += ["", "| sample | human verdict | by | reason |", "|---|---|---|---|"]
        out += [f"| {v['record_id']} | {v['verdict']} | {v['by']} | {v['reason']} |" for v in card["human_verdicts"]]
    if card.get("candidates"):
        out += ["", "| candidate | status | reason |", "|---|---|---|"]
        for c in card["candidates"]:
            extra = (f" (over {', '.join(c['over'])})" if c.get("over") else
                     f" ({c['instead']} chosen instead)" if c.get("instead") else "")
            out.append(f"| {c['record_id']} | {c['status']}{extra} | {c['reason']} |")
    human = {n: c for n, c in card["failure_checks"].items() if c.get("source") == "human"}
    if human:
        out += ["", "Checks set by a person: " + "; ".join(
            f"{n} = {c['status']} ({c.get('by', '?')}: {c['note']})" for n, c in human.items())]
    return "\n".join(out) + ("\n" if out else "")


# --- gated promotion ---------------------------------------------------------------------------

@dataclass(frozen=True)
class AliasPolicy:
    adapter: str
    alias: str
    require_pass: bool = True
    minimums: dict = field(default_factory=dict)  # metric -> lowest allowed value
    maximums: dict = field(default_factory=dict)  # metric -> highest allowed value

    def to_dict(self) -> dict:
        return {"adapter": self.adapter, "alias": self.alias, "require_pass": self.require_pass,
                "min": dict(self.minimums), "max": dict(self.maximums)}

    def problems(self, card_row: EvalCardRow | None) -> list[str]:
        """Why a version with this (newest) card may not take the alias; [] when it may."""
        if card_row is None:
            return ["no evaluation card"]
        card = card_row.card or {}
        out = []
        if self.require_pass and not card_row.passed:
            out.append(f"eval card #{card_row.id} failed" +
                       (f" ({'; '.join(card.get('reasons') or [])})" if card.get("reasons") else ""))
        metrics = card.get("metrics") or {}
        for bound, limits in (("min", self.minimums), ("max", self.maximums)):
            for name, limit in sorted(limits.items()):
                value = (metrics.get(name) or {}).get("value")
                if value is None:
                    out.append(f"{name} missing from eval card #{card_row.id}")
                elif (bound == "min" and value < limit) or (bound == "max" and value > limit):
                    out.append(f"{name} = {value:.4g} is {'below' if bound == 'min' else 'above'} "
                               f"the policy's {bound} {limit:g}")
        return out


def set_alias_policy(catalog, name: str, alias: str, *, require_pass: bool = True,
                     minimums: dict | None = None, maximums: dict | None = None) -> AliasPolicy:
    """Create or replace the policy gating ``alias`` of adapter ``name``."""
    from .store import adapter_row
    from .refs import check_alias

    check_alias(alias)
    policy = AliasPolicy(name, alias, require_pass, dict(minimums or {}), dict(maximums or {}))

    def write(s: Session) -> AliasPolicy:
        adapter = adapter_row(s, name)
        row = s.scalar(select(AliasPolicyRow).where(AliasPolicyRow.adapter_id == adapter.id,
                                                    AliasPolicyRow.alias == alias))
        if row is None:
            row = AliasPolicyRow(adapter_id=adapter.id, alias=alias)
            s.add(row)
        row.require_pass, row.minimums, row.maximums = require_pass, policy.minimums, policy.maximums
        row.updated_at, row.updated_by = datetime.now(timezone.utc), current_user()
        return policy

    return catalog.transact(write)


def remove_alias_policy(catalog, name: str, alias: str) -> None:
    from .store import adapter_row

    def write(s: Session) -> None:
        adapter = adapter_row(s, name)
        row = s.scalar(select(AliasPolicyRow).where(AliasPolicyRow.adapter_id == adapter.id,
                                                    AliasPolicyRow.alias == alias))
        if row is None:
            raise NotFound(f"{name} has no policy for alias {alias!r}")
        s.delete(row)

    catalog.transact(write)


def alias_policies(catalog, name: str) -> list[AliasPolicy]:
    from .store import adapter_row

    def run(s: Session) -> list[AliasPolicy]:
        adapter = adapter_row(s, name)
        rows = s.scalars(select(AliasPolicyRow).where(AliasPolicyRow.adapter_id == adapter.id)
                         .order_by(AliasPolicyRow.alias))
        return [AliasPolicy(name, r.alias, r.require_pass, dict(r.minimums), dict(r.maximums)) for r in rows]

    return catalog.read(run)


class PromotionRefused(Conflict):
    """A move refused by the alias's promotion policy; ``problems`` lists what failed."""

    def __init__(self, message: str, *, hint: str | None = None, problems: list[str] = ()):
        super().__init__(message, hint=hint)
        self.problems = list(problems)


def promotion_gate(s: Session, version: VersionRow, alias: str, *, force: bool = False) -> str:
    """Check a move of ``alias`` to ``version`` against the adapter's policy for that alias.
    Returns text for the alias event's reason ("" when the alias has no policy); raises Conflict
    when the newest card is missing, failed or misses a threshold — unless ``force``, and then
    the returned text records the override and what it overrode."""
    row = s.scalar(select(AliasPolicyRow).where(AliasPolicyRow.adapter_id == version.adapter_id,
                                                AliasPolicyRow.alias == alias))
    if row is None:
        return ""
    name = s.get(AdapterRow, version.adapter_id).name
    policy = AliasPolicy(name, alias, row.require_pass, dict(row.minimums), dict(row.maximums))
    card = latest_card_row(s, version.id)
    problems = policy.problems(card)
    if not problems:
        return f"[gate passed: eval card #{card.id}]"
    if not force:
        raise PromotionRefused(f"{name}@{version.version} cannot become {alias!r}: " + "; ".join(problems),
                               hint=f"run `loradex eval {name}@{version.version} --prompts SUITE`, "
                                    "or pass --force (recorded in the alias history)",
                               problems=problems)
    return "[gate overridden with --force: " + "; ".join(problems) + "]"
