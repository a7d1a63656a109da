"""Tell what a file is from its first bytes, so a bad "model" gets a message a user can act on.

Failed downloads leave HTML pages; clones without ``git lfs`` leave pointer files; some tools
write JSON shape dumps under a ``.safetensors`` name. Each gets named as what it is.

Kinds (``Sniffed.kind``): ``missing``, ``directory``, ``empty``, ``safetensors``, ``lfs-pointer``,
``html``, ``json``, ``text``, ``torch-zip`` (torch ≥ 1.6 ``.pt``/``.bin``/``.ckpt``: a zip holding
``*/data.pkl``), ``zip`` (another zip), ``pickle`` (legacy torch file or a raw pickle),
``unknown``.
"""

from __future__ import annotations

import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidFile, UnsupportedFormat
from ..untrusted import parse_json

SNIFF_BYTES = 4096
MODEL_KINDS = frozenset({"safetensors", "torch-zip", "pickle"})
PICKLE_KINDS = frozenset({"torch-zip", "pickle"})

_LFS_PREFIX = b"version https://git-lfs.github.com/spec/"
_HTML = re.compile(rb"^\s*(<!doctype\s+html|<html|<head|<body|<\?xml[^>]*>\s*<html)", re.I)


@dataclass(frozen=True)
class Sniffed:
    kind: str
    detail: str = ""


def _looks_like_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    # A truncated file still counts: read_header then says exactly what is missing.
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= 100_000_000 and head[8:9] == b"{"


def _looks_like_pickle(head: bytes) -> bool:
    # PROTO opcode with a protocol 2..5: every torch.save and modern pickle starts so.
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def sniff(path) -> Sniffed:
    """Identify the content of ``path`` from its first 4 KiB (no parsing beyond that)."""
    path = Path(path)
    if path.is_dir():
        return Sniffed("directory", "a directory")
    if not path.exists():
        return Sniffed("missing", "no such file")
    size = path.stat().st_size
    if size == 0:
        return Sniffed("empty", "an empty file (0 bytes)")
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    if _looks_like_safetensors(head):
        return Sniffed("safetensors", "safetensors")
    if head.startswith(_LFS_PREFIX):
        return Sniffed("lfs-pointer", _lfs_detail(head))
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _sniff_zip(path)
    if _looks_like_pickle(head):
        return Sniffed("pickle", "a pickle (legacy torch.save format or raw pickle)")
    if head[:1] in b"(}]c" and size <= 1 << 20 and _parses_as_pickle(path):
        return Sniffed("pickle", "a protocol 0/1 (text) pickle")
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if _HTML.match(head.lstrip(b"\xef\xbb\xbf")):
        return Sniffed("html", "an HTML page")
    if stripped[:1] in (b"{", b"["):
        return Sniffed("json", _json_detail(head, size))
    if _is_text(head):
        first = head.decode("utf-8", "replace").strip().splitlines()[0][:60] if head.strip() else ""
        return Sniffed("text", f"text starting {first!r}")
    return Sniffed("unknown", f"unrecognised binary starting {head[:8].hex(' ')}")


def _parses_as_pickle(path: Path) -> bool:
    """Protocol 0/1 pickles are printable text: only a full opcode parse tells them apart."""
    import pickletools

    try:
        with open(path, "rb") as fh:
            for op, _arg, _pos in pickletools.genops(fh):
                if op.name == "STOP":
                    return True
    except Exception:  # noqa: BLE001 - any parse failure means "not a pickle"
        return False
    return False


def _lfs_detail(head: bytes) -> str:
    fields = dict(
        line.split(" ", 1) for line in head.decode("utf-8", "replace").splitlines() if " " in line
    )
    oid, size = fields.get("oid", "?"), fields.get("size", "?")
    try:
        size = f"{int(size):,} bytes"
    except ValueError:
        pass
    return f"oid {oid[:19]}…, {size}"


def _json_detail(head: bytes, size: int) -> str:
    if b'"fakeTensor"' in head:
        return "a shape-only JSON dump (\"fakeTensor\" entries; no weights in it)"
    if size <= SNIFF_BYTES:
        try:
            obj = parse_json(head, "file head")
            if isinstance(obj, dict) and ("error" in obj or "message" in obj):
                msg = str(obj.get("error") or obj.get("message"))[:80]
                return f"a JSON error response ({msg!r})"
        except ValueError:
            pass
    return "JSON text"


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\r\n\t" for c in text)


def _sniff_zip(path: Path) -> Sniffed:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        return Sniffed("unknown", f"a damaged zip archive ({exc})")
    pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if pkl:
        return Sniffed("torch-zip", f"a torch zip archive ({pkl[0]})")
    return Sniffed("zip", f"a zip archive of {len(names)} entries (not a torch file)")


# --- the errors for what is not a model ------------------------------------------------------
def _raise_lfs(path, s):
    raise InvalidFile(path, f"is a Git LFS pointer, not the file ({s.detail})",
                      hint="run `git lfs pull` in its repository, or download the real file")


def _raise_html(path, s):
    raise InvalidFile(path, "is an HTML page, not a model (a failed or login-protected download?)",
                      hint="download it again; check the URL and any token it needs")


def _raise_json(path, s):
    raise InvalidFile(path, f"is JSON text, not a model file: {s.detail}",
                      hint="get the real .safetensors file")


def _raise_empty(path, s):
    raise InvalidFile(path, "is an empty file (0 bytes)", hint="the download or copy failed; get it again")


def _raise_directory(path, s):
    raise InvalidFile(path, "is a directory, not a model file", hint="give the adapter file inside it")


def _raise_missing(path, s):
    raise InvalidFile(path, "no such file")


def _raise_text(path, s):
    raise InvalidFile(path, f"is a text file, not a model ({s.detail})", hint="check what the file really is")


def _raise_zip(path, s):
    raise UnsupportedFormat(path, f"is {s.detail}", hint="extract it and give the model file inside")


def _raise_unknown(path, s):
    raise InvalidFile(path, f"is not a model file loradex knows: {s.detail}",
                      hint="expected .safetensors (or a torch .pt/.bin/.ckpt with --allow-pickle)")


_RAISERS = {
    "lfs-pointer": _raise_lfs, "html": _raise_html, "json": _raise_json, "empty": _raise_empty,
    "directory": _raise_directory, "missing": _raise_missing, "text": _raise_text, "zip": _raise_zip,
    "unknown": _raise_unknown,
}


def raise_for_non_model(path, sniffed: Sniffed | None = None) -> Sniffed:
    """Raise the right :class:`InvalidFile` unless ``path`` looks like a model (safetensors/pickle).

    Returns the :class:`Sniffed` result for model files.
    """
    s = sniffed or sniff(path)
    if s.kind in MODEL_KINDS:
        return s
    _RAISERS[s.kind](path, s)
    raise AssertionError("unreachable")  # pragma: no cover
