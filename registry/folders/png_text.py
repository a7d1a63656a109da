"""The text chunks of a PNG (``tEXt``, ``zTXt``, ``iTXt``), read with caps and no image decode.

ComfyUI stores its graphs as ``prompt`` (API format) and ``workflow`` (UI format) chunks, A1111 /
Forge their generation settings as ``parameters``. Everything here is outside data: the file is
walked chunk by chunk (image data is skipped with a seek, never read), each text chunk is capped
before it is read, compressed text is inflated no further than the cap (a zip bomb stops there),
CRCs are checked, and a chunk that is not text in its declared encoding is refused in one line
naming the file.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from ..errors import UntrustedData

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TEXT_CHUNK = 16 << 20   # one text chunk (a big ComfyUI workflow is ~1 MiB)
MAX_TEXT_TOTAL = 32 << 20   # all text of one file, inflated
MAX_CHUNKS = 100_000        # a PNG of many tiny chunks is not an image anyone made
MAX_KEYWORD = 79            # the PNG specification's limit
TEXT_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt"})


def is_png(head: bytes) -> bool:
    return head.startswith(PNG_SIGNATURE)


def read_png_text(path: str | Path, *, max_chunk: int = MAX_TEXT_CHUNK,
                  max_total: int = MAX_TEXT_TOTAL) -> dict[str, str]:
    """``{keyword: text}`` of every text chunk (the first chunk of a keyword wins)."""
    source = str(path)
    found: dict[str, str] = {}
    total = 0
    try:
        with open(path, "rb") as fh:
            if fh.read(8) != PNG_SIGNATURE:
                raise UntrustedData(source, "not a PNG file (no PNG signature)")
            for _ in range(MAX_CHUNKS):
                head = fh.read(8)
                if len(head) < 8:
                    raise UntrustedData(source, "PNG ends before its IEND chunk (truncated file)")
                length, kind = struct.unpack(">I4s", head)
                if kind == b"IEND":
                    return found
                if kind not in TEXT_CHUNKS:
                    fh.seek(length + 4, 1)  # the chunk's data and CRC, never read
                    continue
                if length > max_chunk:
                    raise UntrustedData(source, f"a {kind.decode('latin-1')} chunk of {length} bytes, "
                                                f"over the {max_chunk}-byte cap")
                data = fh.read(length)
                crc = fh.read(4)
                if len(data) < length or len(crc) < 4:
                    raise UntrustedData(source, "PNG ends inside a text chunk (truncated file)")
                if struct.unpack(">I", crc)[0] != zlib.crc32(kind + data):
                    raise UntrustedData(source, f"{kind.decode('latin-1')} chunk has a wrong CRC (damaged file)")
                keyword, text = _decode(kind, data, source, max_total - total)
                total += len(text)
                found.setdefault(keyword, text)
    except OSError as exc:
        raise UntrustedData(source, f"cannot read ({exc.strerror or exc})") from None
    raise UntrustedData(source, f"more than {MAX_CHUNKS} PNG chunks")


def _keyword(raw: bytes, source: str) -> str:
    if not 1 <= len(raw) <= MAX_KEYWORD:
        raise UntrustedData(source, f"a PNG text keyword of {len(raw)} bytes (1-{MAX_KEYWORD} allowed)")
    return raw.decode("latin-1")


def _inflate(data: bytes, source: str, budget: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, budget + 1)
    except zlib.error:
        raise UntrustedData(source, "compressed PNG text that does not inflate (damaged file)") from None
    if len(out) > budget or inflater.unconsumed_tail:
        raise UntrustedData(source, f"compressed PNG text inflating past the {MAX_TEXT_TOTAL}-byte cap")
    return out


def _decode(kind: bytes, data: bytes, source: str, budget: int) -> tuple[str, str]:
    raw_key, sep, rest = data.partition(b"\0")
    if not sep:
        raise UntrustedData(source, f"{kind.decode('latin-1')} chunk without a keyword separator")
    keyword = _keyword(raw_key, source)
    if kind == b"tEXt":
        body = rest
        # tEXt is Latin-1 by the specification, but some writers put UTF-8 there: read it as such
        # when it is valid UTF-8 (pure ASCII reads the same either way)
        encoding = "utf-8" if _is_utf8(rest) else "latin-1"
    elif kind == b"zTXt":
        if not rest or rest[0] != 0:
            raise UntrustedData(source, f"zTXt chunk {keyword!r} with an unknown compression method")
        body = _inflate(rest[1:], source, budget)
        encoding = "latin-1"
    else:  # iTXt: flag, method, language\0, translated keyword\0, UTF-8 text
        if len(rest) < 2:
            raise UntrustedData(source, f"iTXt chunk {keyword!r} is cut short")
        compressed, method = rest[0], rest[1]
        parts = rest[2:].split(b"\0", 2)
        if len(parts) != 3:
            raise UntrustedData(source, f"iTXt chunk {keyword!r} is cut short")
        body = parts[2]
        if compressed:
            if method != 0:
                raise UntrustedData(source, f"iTXt chunk {keyword!r} with an unknown compression method")
            body = _inflate(body, source, budget)
        encoding = "utf-8"
    if len(body) > budget:
        raise UntrustedData(source, f"PNG text over the {MAX_TEXT_TOTAL}-byte cap in all")
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError:
        raise UntrustedData(source, f"PNG text chunk {keyword!r} is not UTF-8 text") from None
    return keyword, text


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def png_text_chunk(keyword: str, text: str) -> bytes:
    """One ``iTXt`` chunk (uncompressed UTF-8), as ComfyUI and A1111 write theirs (tests, writers)."""
    data = keyword.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8")
    return struct.pack(">I", len(data)) + b"iTXt" + data + struct.pack(">I", zlib.crc32(b"iTXt" + data))
