"""Reading a commit's NDJSON body as a stream, so an inline file of any accepted size passes
through bounded memory.

``huggingface_hub`` sends a commit as one JSON object per line: a header, then one line per
operation. A ``file`` line carries the file's bytes base64-encoded in ``value.content`` — for a
client that would otherwise use Xet (``app.xet_without_asking``) that is a whole LoRA, possibly
gigabytes. Each line is handled one of two ways:

* a line shorter than ``line_in_memory_bytes`` is read whole and parsed as before
  (``request_schemas.parse_body``: ``untrusted.parse_json`` + the ``COMMIT_LINE`` schema);
* a longer line goes through :class:`_LineScanner`: a small JSON state machine copies the line
  into a *skeleton* — everything except the characters of the string at ``value.content`` — and
  sends those characters, chunk by chunk, through a base64 decoder into a staged file, hashing
  sha256 on the way. The skeleton (``"content": ""`` in place of the file) is capped at
  ``SKELETON_MAX_BYTES`` and then parsed and schema-checked like a short line; it is valid JSON
  exactly when the line is, because only the inside of one string was taken out and that inside
  was checked character by character. Inside the content string, JSON escapes are decoded
  (``\\/`` and ``\\uXXXX`` naming a base64 character are legal ways to write base64); anything
  that is not base64 is a 400 naming the line.

Limits: the whole body ≤ ``max_body_bytes`` (413, checked on the declared Content-Length and on
what arrives), each file ≤ ``max_file_bytes`` (413), at most ``MAX_COMMIT_LINES`` operations.

Staged files live in a work folder under ``<hub>/incoming/`` (``files.atomic_files.held_work_dir``:
one flock'ed lock file, the folder removed when the request ends however it ends). Nothing is
published while the body is read: the commit handler moves the staged files into the object store
(same file system, ``os.replace``) only after the whole body parsed, right before the repo
store's atomic commit. A client that disconnects or sends a bad line leaves no file behind; a
server killed mid-body leaves a work folder whose lock is free, which the next start of the app
removes (``sweep_incoming``).
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

from starlette.concurrency import run_in_threadpool

from ...files.atomic_files import held_work_dir, remove_abandoned_work_dirs
from . import request_schemas as S
from .protocol_errors import BadRequest, TooLarge

DEFAULT_LINE_IN_MEMORY_BYTES = 8 << 20  # a commit line up to this long is parsed whole
SKELETON_MAX_BYTES = 64 << 10           # a streamed line's JSON outside its file content
MAX_COMMIT_LINES = 100_000              # operations (and header) in one commit
MAX_NESTING = 32
FEED_BATCH_BYTES = 1 << 20              # body bytes handed to the parser (in a worker thread) at once
HEAD_BYTES = 512                        # what the commit looks at to tell binary from text
INCOMING_DIR = "incoming"

_BASE64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
_QUOTE_OR_BACKSLASH = re.compile(rb'["\\]')
_SIMPLE_ESCAPES = {ord("/"): b"/"}      # the only one-letter JSON escape that can be base64


@dataclass(frozen=True)
class CommitLimits:
    max_body_bytes: int
    max_file_bytes: int
    line_in_memory_bytes: int = DEFAULT_LINE_IN_MEMORY_BYTES


@dataclass
class StagedFile:
    """One inline file's bytes, decoded into the request's work folder (not yet published)."""

    path: Path
    sha256: str
    size: int
    head: bytes  # the first HEAD_BYTES bytes

    def git_blob_id(self) -> str:
        """The git blob sha1 of the content (what a regular file is listed with)."""
        digest = hashlib.sha1(b"blob %d\x00" % self.size)
        with open(self.path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    def publish(self, objects) -> None:
        """Move the bytes into ``objects`` (an ``ObjectStore``) under their sha256, unless an
        object of that size is there already."""
        objects.publish_file(self.path, self.sha256, self.size)


@dataclass
class CommitLine:
    number: int
    item: dict                       # {"key": …, "value": {…}}, parsed and schema-checked
    staged: StagedFile | None = None  # a ``file`` line's content (its ``value.content`` is dropped)


def sweep_incoming(hub_root: Path) -> None:
    """Remove work folders that requests of a dead server left under ``<hub>/incoming/``."""
    remove_abandoned_work_dirs(Path(hub_root) / INCOMING_DIR)


@contextlib.asynccontextmanager
async def received_commit(request, hub_root: Path, limits: CommitLimits) -> AsyncIterator[list[CommitLine]]:
    """The commit body of ``request``, read as a stream into checked lines whose files are staged
    under ``<hub>/incoming/``; the staged files are removed when the block exits (those the
    handler published were moved away first)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise TooLarge(f"commit body of {declared} bytes is over the limit of {limits.max_body_bytes}")
    with held_work_dir(Path(hub_root) / INCOMING_DIR, "commit-") as work:
        reader = CommitBodyReader(work, limits)
        batch: list[bytes] = []
        batched, batch_bytes = 0, min(FEED_BATCH_BYTES, limits.line_in_memory_bytes)  # held ≤ a line in memory
        async for chunk in request.stream():
            batch.append(chunk)
            batched += len(chunk)
            if batched >= batch_bytes:
                await run_in_threadpool(reader.feed, b"".join(batch))
                batch, batched = [], 0
        if batch:
            await run_in_threadpool(reader.feed, b"".join(batch))
        yield await run_in_threadpool(reader.finish)


class CommitBodyReader:
    """Fed the body in pieces (``feed``), returns the checked lines at the end (``finish``)."""

    def __init__(self, work_dir: Path, limits: CommitLimits):
        self.work_dir = Path(work_dir)
        self.limits = limits
        self.received = 0
        self.lines: list[CommitLine] = []
        self._number = 0       # line number of the line being read (1-based, blank lines counted)
        self._pending = bytearray()
        self._scanner: _LineScanner | None = None
        self._files = 0

    # -- input ----------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > self.limits.max_body_bytes:
            raise TooLarge(f"commit body is over the limit of {self.limits.max_body_bytes} bytes")
        while data:
            if self._scanner is not None:
                data = self._scanner.feed(data)
                if self._scanner.ended:
                    self._scanned_line_done()
                continue
            newline = data.find(b"\n")
            end = len(data) if newline < 0 else newline
            if len(self._pending) + end > self.limits.line_in_memory_bytes:
                self._start_scanner()  # takes the pending start of the line; ``data`` follows
                continue
            self._pending += data[:end]
            if newline < 0:
                return
            data = data[newline + 1:]
            self._whole_line_done()

    def finish(self) -> list[CommitLine]:
        if self._scanner is not None:
            self._scanner.end_of_body()
            self._scanned_line_done()
        elif self._pending.strip():
            self._whole_line_done()
        return self.lines

    # -- lines ----------------------------------------------------------------------------------
    def _what(self) -> str:
        return f"commit line {self._number + 1}"

    def _whole_line_done(self) -> None:
        line, self._pending = bytes(self._pending), bytearray()
        if line.strip():
            item = S.parse_body(line, S.COMMIT_LINE, self._what(), max_string=len(line))
            self._add(item, None)
        self._number += 1

    def _start_scanner(self) -> None:
        self._scanner = _LineScanner(self._what(), self._new_file, self.limits.max_file_bytes)
        pending, self._pending = bytes(self._pending), bytearray()
        self._scanner.feed(pending)  # holds no newline, so the line goes on

    def _scanned_line_done(self) -> None:
        scanner, self._scanner = self._scanner, None
        if scanner.skeleton.strip():
            item = S.parse_body(bytes(scanner.skeleton), S.COMMIT_LINE, self._what(), max_string=SKELETON_MAX_BYTES)
            if scanner.staged is not None and item["key"] != "file":
                raise BadRequest(f"{self._what()}: only a 'file' operation carries content")
            self._add(item, scanner.staged)
        self._number += 1

    def _add(self, item: dict, staged: StagedFile | None) -> None:
        if len(self.lines) >= MAX_COMMIT_LINES:
            raise TooLarge(f"a commit has at most {MAX_COMMIT_LINES} operations")
        value = item["value"]
        if item["key"] == "file":
            path = value.get("path")
            if value.get("encoding", "base64") != "base64":
                raise BadRequest(f"{path}: only base64 file content is supported")
            if staged is None:  # a whole line: decode its content here
                try:
                    data = base64_decode(value.get("content", ""))
                except binascii.Error:
                    raise BadRequest(f"{path}: content is not base64") from None
                staged = self._stage_bytes(data)
            value.pop("content", None)
        self.lines.append(CommitLine(self._number + 1, item, staged))

    # -- staged files ---------------------------------------------------------------------------
    def _new_file(self) -> Path:
        self._files += 1
        return self.work_dir / f"{self._files:06d}.part"

    def _stage_bytes(self, data: bytes) -> StagedFile:
        if len(data) > self.limits.max_file_bytes:
            raise TooLarge(f"{self._what()}: a file of {len(data)} bytes is over the upload limit of "
                           f"{self.limits.max_file_bytes}")
        path = self._new_file()
        with open(path, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return StagedFile(path, hashlib.sha256(data).hexdigest(), len(data), data[:HEAD_BYTES])


def base64_decode(text: str) -> bytes:
    """Strict base64 (the alphabet, padding only at the end), as ``b64decode(validate=True)``."""
    raw = text.encode("ascii", "strict") if text.isascii() else None
    if raw is None or len(raw) % 4:
        raise binascii.Error("not base64")
    return binascii.a2b_base64(raw, strict_mode=True)


@dataclass
class _Frame:
    kind: int              # ord("{") or ord("[")
    expect_key: bool = False
    key: str | None = None


@dataclass
class _LineScanner:
    """One long NDJSON line, fed in pieces: the JSON skeleton is kept (capped), the characters of
    the string at ``value.content`` go through :class:`_Base64File` into a staged file."""

    what: str
    new_file: object        # () -> Path
    max_file_bytes: int
    skeleton: bytearray = field(default_factory=bytearray)
    staged: StagedFile | None = None
    ended: bool = False
    _stack: list = field(default_factory=list)
    _in_string: bool = False
    _string_is_key: bool = False
    _escaped: bool = False
    _key_raw: bytearray = field(default_factory=bytearray)
    _content: "_Base64File | None" = None
    _carry: bytes = b""     # an escape cut by the end of a piece (content string only)

    def feed(self, data: bytes) -> bytes:
        """Consume ``data`` up to the end of the line; returns what follows the newline."""
        if self._carry:
            data, self._carry = self._carry + data, b""
        i, n = 0, len(data)
        while i < n:
            if self._content is not None:
                i = self._feed_content(data, i)
                continue
            c = data[i]
            i += 1
            if c == 0x0A and not self._in_string:  # the newline ending the line
                self.ended = True
                return data[i:]
            self._structure(c)
        return b""

    def end_of_body(self) -> None:
        if self._content is not None or self._carry:
            raise BadRequest(f"{self.what}: the body ends inside the file content (truncated)")
        self.ended = True

    # -- the JSON around the content ---------------------------------------------------------------
    def _structure(self, c: int) -> None:
        if len(self.skeleton) >= SKELETON_MAX_BYTES:
            raise TooLarge(f"{self.what}: more than {SKELETON_MAX_BYTES} bytes of JSON outside the file content")
        if self._in_string:
            self.skeleton.append(c)
            if self._string_is_key and len(self._key_raw) < 1024:
                self._key_raw.append(c)
            if self._escaped:
                self._escaped = False
            elif c == 0x5C:  # backslash
                self._escaped = True
            elif c == 0x22:  # closing quote
                self._in_string = False
                if self._string_is_key:
                    self._stack[-1].key = _decoded_key(self._key_raw)
            return
        if c == 0x22:  # opening quote: a key, the content, or another string value
            top = self._stack[-1] if self._stack else None
            self.skeleton.append(c)
            if top is not None and top.kind == 0x7B and top.expect_key:
                top.expect_key, self._string_is_key = False, True
                self._key_raw = bytearray(b'"')
                self._in_string = True
            elif self._at_content():
                if self.staged is not None:
                    raise BadRequest(f"{self.what}: the file content appears twice")
                self._content = _Base64File(self.new_file(), self.max_file_bytes, self.what)
            else:
                self._string_is_key = False
                self._in_string = True
            return
        self.skeleton.append(c)
        if c in (0x7B, 0x5B):  # { [
            if len(self._stack) >= MAX_NESTING:
                raise BadRequest(f"{self.what}: JSON nested too deeply")
            self._stack.append(_Frame(c, expect_key=c == 0x7B))
        elif c in (0x7D, 0x5D) and self._stack:  # } ]
            self._stack.pop()
        elif c == 0x2C and self._stack and self._stack[-1].kind == 0x7B:  # , in an object
            self._stack[-1].expect_key = True

    def _at_content(self) -> bool:
        """Whether a string value starting now is ``value.content`` of the line's object."""
        s = self._stack
        return (len(s) == 2 and s[0].kind == 0x7B and s[0].key == "value" and s[1].kind == 0x7B
                and s[1].key == "content")

    # -- the content string ------------------------------------------------------------------------
    def _feed_content(self, data: bytes, i: int) -> int:
        found = _QUOTE_OR_BACKSLASH.search(data, i)
        stop = len(data) if found is None else found.start()
        self._content.write(data[i:stop])
        if found is None:
            return stop
        if data[stop] == 0x22:  # the closing quote: the file is complete
            self.staged = self._content.close()
            self._content = None
            self.skeleton.append(0x22)
            return stop + 1
        escape = data[stop:stop + 6] if data[stop + 1:stop + 2] == b"u" else data[stop:stop + 2]
        needed = 6 if escape[1:2] == b"u" else 2
        if len(escape) < needed:  # cut by the end of this piece: wait for the next
            self._carry = data[stop:]
            return len(data)
        self._content.write(self._unescape(escape))
        return stop + needed

    def _unescape(self, escape: bytes) -> bytes:
        letter = escape[1]
        if letter in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[letter]
        if letter == ord("u"):
            try:
                code = int(escape[2:6], 16)
            except ValueError:
                raise BadRequest(f"{self.what}: invalid JSON escape {escape!r} in the file content") from None
            if code < 128 and code in _BASE64_CHARS:
                return bytes([code])
        raise BadRequest(f"{self.what}: the file content is not base64 (JSON escape {escape.decode('ascii', 'replace')} "
                         "stands for a character base64 does not use)")


class _Base64File:
    """Base64 text written in pieces, decoded into a staged file with its sha256 and size."""

    def __init__(self, path: Path, max_bytes: int, what: str):
        self.path, self.max_bytes, self.what = path, max_bytes, what
        self.fh = open(path, "wb")
        self.hasher = hashlib.sha256()
        self.size = 0
        self.head = b""
        self._quad = b""       # < 4 characters waiting for the rest of their group
        self._padded = False   # '=' seen: nothing may follow

    def write(self, text: bytes) -> None:
        if not text:
            return
        if self._padded:
            raise BadRequest(f"{self.what}: the file content is not base64 (characters after the '=' padding)")
        text = self._quad + text
        whole = len(text) - len(text) % 4
        self._quad = text[whole:]
        if whole:
            self._decode(text[:whole])

    def _decode(self, text: bytes) -> None:
        try:
            out = binascii.a2b_base64(text, strict_mode=True)
        except binascii.Error as exc:
            raise BadRequest(f"{self.what}: the file content is not base64 ({exc})") from None
        self._padded = text.endswith(b"=")
        self.size += len(out)
        if self.size > self.max_bytes:
            raise TooLarge(f"{self.what}: the file is over the upload limit of {self.max_bytes} bytes")
        if len(self.head) < HEAD_BYTES:
            self.head += out[:HEAD_BYTES - len(self.head)]
        self.hasher.update(out)
        self.fh.write(out)

    def close(self) -> StagedFile:
        if self._quad:
            raise BadRequest(f"{self.what}: the file content is not base64 (its length is not a multiple of 4)")
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        return StagedFile(self.path, self.hasher.hexdigest(), self.size, self.head)


def _decoded_key(raw: bytearray) -> str | None:
    """A key's text (``raw`` with its quotes, escapes undecoded); None when it cannot be one we read."""
    try:
        key = json.loads(bytes(raw))
    except ValueError:
        return None
    return key if isinstance(key, str) else None
