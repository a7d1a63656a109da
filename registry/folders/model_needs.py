"""``loradex resolve FILE``: which format FILE is, the models it needs, and their answers.

FILE may be a PNG (its ``workflow`` / ``prompt`` chunks from ComfyUI, its ``parameters`` from
A1111 / Forge / Civitai), a JSON file (a ComfyUI UI or API workflow, a template's model list,
Civitai generation data or an ``/api/v1/images`` item), or a text file of A1111 parameters.
Each reader registers under a name in :data:`JSON_READERS` (first match wins); the PNG
keywords map to readers in :data:`PNG_KEYWORDS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import UntrustedData
from ..remotes.resolve import ModelNeed, ResolveReport, resolve_needs
from ..untrusted import parse_json
from . import a1111_parameters as A
from . import civitai_generation as G
from . import comfyui_workflow as W
from .png_text import is_png, read_png_text

MAX_FILE = 32 << 20  # a JSON / text file to resolve (a big workflow is a few MiB)

# (format name, is it this format?, reader): JSON documents
JSON_READERS: list[tuple[str, Callable[[object], bool], Callable[[object, str], list[ModelNeed]]]] = [
    ("comfyui-ui", W.is_ui_workflow, W.needs_from_ui),
    ("comfyui-template-models", W.is_template_models,
     lambda data, source: W.needs_from_model_files(data["models"], source, "models")),
    ("civitai-generation", G.is_generation_data, G.needs_from_generation),
    ("comfyui-api", W.is_api_prompt, W.needs_from_api),
]
# PNG text keyword → (format name, reader of its text)
PNG_KEYWORDS = {
    "workflow": ("comfyui-ui", lambda text, source: _json_needs(parse_json(text, source), source, "comfyui-ui")),
    "prompt": ("comfyui-api", lambda text, source: _json_needs(parse_json(text, source), source, "comfyui-api")),
    "parameters": ("a1111-parameters", A.needs_from_parameters),
}


def _json_needs(data, source: str, only: str | None = None) -> list[ModelNeed]:
    for name, matches, reader in JSON_READERS:
        if (only is None or name == only) and matches(data):
            return reader(data, source)
    raise UntrustedData(source, "not a ComfyUI workflow (UI or API format), a template's model list "
                                "or Civitai generation data")


def read_needs(path: str | Path) -> tuple[str, list[ModelNeed]]:
    """(format, needs) of FILE. Raises UntrustedData naming the file when it is none of them."""
    path = Path(path)
    source = str(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if not is_png(head):
                fh.seek(0)
                data = fh.read(MAX_FILE + 1)
    except OSError as exc:
        raise UntrustedData(source, f"cannot read ({exc.strerror or exc})") from None
    if is_png(head):
        chunks = read_png_text(path)
        formats, needs = [], []
        for keyword, (fmt, reader) in PNG_KEYWORDS.items():
            if keyword in chunks:
                formats.append(fmt)
                needs.extend(reader(chunks[keyword], f"{source} ({keyword} chunk)"))
        if not formats:
            raise UntrustedData(source, "a PNG without generation data (no workflow, prompt or parameters "
                                        "text chunk)")
        return "+".join(formats), needs
    if len(data) > MAX_FILE:
        raise UntrustedData(source, f"over the {MAX_FILE}-byte cap for a workflow or parameters file")
    if data.lstrip()[:1] in (b"{", b"["):
        value = parse_json(data, source)
        for name, matches, reader in JSON_READERS:
            if matches(value):
                return name, reader(value, source)
        _json_needs(value, source)  # raises the one-line "not a workflow" error
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UntrustedData(source, "not UTF-8 text, a JSON workflow or a PNG") from None
    if not A.looks_like_parameters(text):
        raise UntrustedData(source, "not a workflow, generation data or A1111 parameters "
                                    "(no 'Steps:' settings line)")
    return "a1111-parameters", A.needs_from_parameters(text, source)


def resolve_file(catalog, path: str | Path, *, remote: str | None = None, pull: bool = False,
                 progress=None) -> ResolveReport:
    """Every model FILE needs, matched to the catalog or to where it can be had (and pulled)."""
    fmt, needs = read_needs(path)
    return resolve_needs(catalog, needs, file=str(path), fmt=fmt, remote=remote, pull=pull, progress=progress)
