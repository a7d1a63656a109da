"""Static scan of pickles (.pt/.bin/.ckpt) and the only way loradex loads one.

Unpickling runs code: a pickle names callables by module and attribute (opcodes ``GLOBAL``,
``INST``, ``STACK_GLOBAL``) and calls them. We read the opcode stream with the stdlib
``pickletools`` — nothing is executed — and list every imported global. Anything outside
torch's tensor-rebuild allow-list (the set ``torch.load(weights_only=True)`` accepts) is refused
before torch sees the file; then the file is loaded with ``weights_only=True`` anyway, so the
two checks back each other up.

Containers: a torch zip archive (``<dir>/data.pkl``, including the old ``archive/data.pkl``
layout; every ``*.pkl`` member is scanned), a legacy ``torch.save`` file (five consecutive
pickles: magic, protocol, sys info, the object, storage keys) and a plain pickle.

The opcodes run through an abstract machine (``_Machine``): each opcode's stack effect on symbolic
values (a literal, an imported global, the result of calling one, a tuple of those), nothing
executed. ``STACK_GLOBAL`` (protocol ≥ 4) takes module and name from that stack (string pushes
and memo gets); anything else is reported as ``<unresolved STACK_GLOBAL>`` and refused (fail
closed). Names match the allow-list exactly: a module or name carrying a newline or other junk
(``"torch._utils\n"``) is not the global it resembles.

Torch's allow-list is about code, not memory: ``builtins.bytearray(2**33)`` is 8 GiB from a
32-byte file, and ``torch.FloatStorage(n)`` / ``torch.Tensor(torch.Size(…))`` likewise. The
machine also refuses (``ScanReport.refused_calls``): a call of an allocating global (bytearray,
``*Storage``, ``*Tensor``) with anything but string/bytes data; a call of something that is not an
imported global; calls copying more string bytes than the pickle holds (memo references repeated);
a torch storage reference whose element count exceeds the file's size. ``torch.save`` writes none
of these: tensors come back through ``_rebuild_*`` and persistent storage references.
"""

from __future__ import annotations

import io
import pickletools
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidFile, LoradexError, UnsafePickle, UsageError

MAX_PICKLE_MEMBER = 256 * 1024 * 1024  # data.pkl of a huge checkpoint is a few MB; refuse zip bombs
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
UNRESOLVED = "<unresolved STACK_GLOBAL>"

# What torch 2.x's weights_only unpickler accepts (torch/_weights_only_unpickler.py).
ALLOWED_GLOBALS = frozenset({
    "_codecs.encode", "builtins.bytearray", "builtins.complex", "builtins.set",
    "collections.Counter", "collections.OrderedDict",
    "torch.Size", "torch.Tensor", "torch.device", "torch.nn.parameter.Parameter",
    "torch.serialization._get_layout", "torch._tensor._rebuild_from_type_v2",
    "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor", "torch._utils._rebuild_device_tensor_from_numpy",
    "torch._utils._rebuild_meta_tensor_no_storage", "torch._utils._rebuild_nested_tensor",
    "torch._utils._rebuild_qtensor", "torch._utils._rebuild_sparse_tensor",
    "torch._utils._rebuild_wrapper_subclass",
    "torch.storage.TypedStorage", "torch.storage.UntypedStorage",
    "torch.per_channel_affine", "torch.per_channel_affine_float_qparams", "torch.per_channel_symmetric",
    "torch.per_tensor_affine", "torch.per_tensor_symmetric",
})
_ALLOWED_PATTERNS = (
    re.compile(r"^torch\.(cuda\.)?[A-Za-z0-9]+Storage$"),
    re.compile(r"^torch\.(cuda\.|sparse\.|cuda\.sparse\.)?[A-Za-z0-9]+Tensor$"),
    # dtypes: torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.uint4, torch.qint8 ...
    re.compile(r"^torch\.(float\d+(_e\d+m\d+(fn|fnuz|fnu)?)?(_x\d+)?|float4_e2m1fn_x2|bfloat16|bool|complex\d+"
               r"|u?int\d+|q?u?int\d+(x\d+)?|bits\d+(x\d+)?)$"),
)


def is_allowed(name: str) -> bool:
    """Exact match only: a name carrying a newline or other junk is not the global it resembles."""
    return name in ALLOWED_GLOBALS or any(p.fullmatch(name) for p in _ALLOWED_PATTERNS)


@dataclass(frozen=True)
class ScanReport:
    path: str
    container: str  # "torch-zip" | "torch-legacy" | "pickle"
    globals: tuple[str, ...]  # every imported global, sorted, "module.qualname"
    disallowed: tuple[str, ...]  # those outside the allow-list
    members: tuple[str, ...] = ()  # pickles scanned (zip member names)
    refused_calls: tuple[str, ...] = ()  # allowed globals called in a way that could exhaust memory

    @property
    def safe(self) -> bool:
        return not self.disallowed and not self.refused_calls

    def to_dict(self) -> dict:
        return {"path": self.path, "container": self.container, "globals": list(self.globals),
                "disallowed": list(self.disallowed), "members": list(self.members),
                "refused_calls": list(self.refused_calls)}


_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
                         "BINSTRING", "STRING"})
_BYTES_OPS = frozenset({"SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "BYTEARRAY8"})
_NUMBER_OPS = frozenset({"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_CALL_OPS = frozenset({"REDUCE", "NEWOBJ", "NEWOBJ_EX", "OBJ", "INST"})

# Allowed callables that allocate what an integer argument says (bytearray(2**33): 8 GiB from a
# 32-byte pickle; torch.FloatStorage(n), torch.Tensor(n), UntypedStorage(n) likewise). torch.save
# never calls them with a size: tensors come back through _rebuild_* and persistent storages.
_ALLOCATORS = frozenset({"builtins.bytearray", "torch.Tensor", "torch.storage.TypedStorage",
                         "torch.storage.UntypedStorage"})
_ALLOCATOR_PATTERN = re.compile(r"torch\.(cuda\.|sparse\.|cuda\.sparse\.)?[A-Za-z0-9]+(Storage|Tensor)")
# Calls copying their (string) arguments: repeated memo references could make a small file copy
# one large string many times; the bytes they copy together are capped at the pickle's own size.
_COPY_SLACK = 1 << 20


def _qualified(module: str, attr: str) -> str:
    # Protocol ≤ 2 pickles use Python 2 module names; unpickling maps them (pickle's fix_imports).
    from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING

    if (module, attr) in NAME_MAPPING:
        module, attr = NAME_MAPPING[(module, attr)]
    module = IMPORT_MAPPING.get(module, module)
    return f"{module}.{attr}"


def _is_allocator(name: str) -> bool:
    return name in _ALLOCATORS or _ALLOCATOR_PATTERN.fullmatch(name) is not None


_OTHER = ("other", None)
_MARK = ("mark", None)


class _Machine:
    """An abstract pickle machine: the opcodes' stack effects on symbolic values (a literal,
    a global, the result of calling a global, a tuple of those, or "other"), never executing them."""

    def __init__(self, size: int, file_size: int):
        self.file_size = file_size
        self.stack: list[tuple] = []
        self.memo: dict = {}
        self.found: list[str] = []
        self.refused: list[str] = []
        self.copied = 0
        self.copy_cap = size + _COPY_SLACK

    def pop(self):
        return self.stack.pop() if self.stack else _OTHER

    def pop_mark(self) -> list[tuple]:
        items = []
        while self.stack:
            top = self.stack.pop()
            if top is _MARK:
                break
            items.append(top)
        return items[::-1]

    def step(self, op, arg) -> None:
        name = op.name
        if name in _STRING_OPS:
            self.stack.append(("lit", arg.decode("latin-1") if isinstance(arg, bytes) else arg))
        elif name in _BYTES_OPS or name in _NUMBER_OPS:
            self.stack.append(("lit", arg))
        elif name in _GET_OPS:
            self.stack.append(self.memo.get(arg, _OTHER))
        elif name in _PUT_OPS or name == "MEMOIZE":
            self.memo[arg if name != "MEMOIZE" else len(self.memo)] = self.stack[-1] if self.stack else _OTHER
        elif name == "MARK":
            self.stack.append(_MARK)
        elif name in ("GLOBAL", "INST"):
            module, _, attr = arg.partition(" ")  # pickletools joins the two lines with a space
            self.found.append(_qualified(module, attr) if arg.count(" ") == 1 else f"<malformed {name} {arg!r}>")
            if name == "GLOBAL":
                self.stack.append(("global", self.found[-1]))
            else:
                self.call(("global", self.found[-1]), self.pop_mark(), name)
        elif name == "STACK_GLOBAL":
            attr, module = self.pop(), self.pop()
            if module[0] == "lit" and attr[0] == "lit" and isinstance(module[1], str) and isinstance(attr[1], str):
                self.found.append(_qualified(module[1], attr[1]))
            else:
                self.found.append(UNRESOLVED)
            self.stack.append(("global", self.found[-1]))
        elif name in ("EXT1", "EXT2", "EXT4"):
            self.found.append(f"<copyreg extension {arg}>")
            self.stack.append(("global", self.found[-1]))
        elif name in ("REDUCE", "NEWOBJ"):
            args = self.pop()
            self.call(self.pop(), list(args[1]) if args[0] == "tuple" else [args], name)
        elif name == "NEWOBJ_EX":
            kwargs, args = self.pop(), self.pop()
            self.call(self.pop(), (list(args[1]) if args[0] == "tuple" else [args]) + [kwargs], name)
        elif name == "OBJ":
            items = self.pop_mark()
            self.call(items[0] if items else _OTHER, items[1:], name)
        elif name == "TUPLE":
            self.stack.append(("tuple", tuple(self.pop_mark())))
        elif name == "BINPERSID":
            self.persistent(self.pop())
            self.stack.append(_OTHER)
        elif name in ("EMPTY_TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"):
            n = {"EMPTY_TUPLE": 0, "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}[name]
            items = [self.pop() for _ in range(n)][::-1]
            self.stack.append(("tuple", tuple(items)))
        else:  # every other opcode: its declared stack effect, results unknown
            before = [s.name for s in op.stack_before]
            if "mark" in before:
                self.pop_mark()
                before = before[: before.index("mark")]
            for _ in before:
                self.pop()
            self.stack.extend(_MARK if s.name == "mark" else _OTHER for s in op.stack_after)

    def persistent(self, pid: tuple) -> None:
        """torch's storage reference ("storage", type, key, location, numel, …): torch allocates numel
        elements before reading them, so numel may not exceed the file's size."""
        items = pid[1] if pid[0] == "tuple" else ()
        if len(items) >= 5 and items[0] == ("lit", "storage"):
            numel = items[4][1] if items[4][0] == "lit" else None
            if not isinstance(numel, int) or isinstance(numel, bool) or not 0 <= numel <= self.file_size:
                self.refused.append("<a storage whose element count is not a number up to the file's size>")

    def call(self, callable_, args: list[tuple], how: str) -> None:
        """Record a call the unpickler would make; refuse allocating ones given a size."""
        if callable_[0] != "global":
            self.refused.append(f"<{how} of a callable that is not an imported global>")
            self.stack.append(_OTHER)
            return
        target = callable_[1]
        if _is_allocator(target):
            sized = [a for a in args if a[0] == "call" or (a[0] == "lit" and not isinstance(a[1], (str, bytes)))
                     or a[0] == "other" and how == "NEWOBJ_EX"]
            sized = [a for a in sized if a != ("call", "_codecs.encode")]
            if sized:
                self.refused.append(f"{target}(…) called with a size or an object, not data "
                                    "(it could allocate any amount of memory)")
        for a in args:
            if a[0] == "lit" and isinstance(a[1], (str, bytes)):
                self.copied += len(a[1])
        if self.copied > self.copy_cap:
            self.refused.append(f"<calls copying {self.copied:,} bytes of strings from a smaller pickle>")
            self.copy_cap = float("inf")  # said once
        self.stack.append(("call", target))


def _globals_of_one(stream: io.BytesIO, machine: _Machine) -> None:
    """Run the pickle starting at ``stream``'s position through ``machine``; leaves it after STOP."""
    machine.stack.clear()
    machine.memo.clear()
    for op, arg, _pos in pickletools.genops(stream):
        machine.step(op, arg)


def _scan_stream(data: bytes, count: int = 1, file_size: int | None = None) -> _Machine:
    stream = io.BytesIO(data)
    machine = _Machine(len(data), len(data) if file_size is None else file_size)
    for _ in range(count):
        _globals_of_one(stream, machine)
    return machine


def _legacy_pickle_count(data: bytes) -> int:
    """A legacy torch.save file is 5 pickles when the first is torch's magic number, else 1."""
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            if op.name in ("LONG1", "LONG4", "LONG", "INT"):
                return 5 if arg == TORCH_LEGACY_MAGIC else 1
            if op.name == "STOP":
                break
    except ValueError:
        pass
    return 1


# What a damaged zip archive raises from zipfile: bad magic/CRC/name (BadZipFile), a broken deflate
# stream (zlib.error), an unknown compression method (NotImplementedError), an encrypted member
# (RuntimeError), a seek to a bad member offset (OSError), truncated data (EOFError, ValueError).
_DAMAGED_ZIP = (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, OSError, EOFError, ValueError)


def scan_pickle(path) -> ScanReport:
    """List the globals a pickle file imports, without unpickling it."""
    path = Path(path)
    with open(path, "rb") as fh:  # a missing or unreadable file keeps its own OSError
        try:  # is_zipfile itself raises on some damaged end records (e.g. a multi-disk zip64 locator)
            is_zip = zipfile.is_zipfile(fh)
        except _DAMAGED_ZIP as exc:
            raise InvalidFile(path, f"damaged zip archive: {exc}", hint="re-download it") from None
        if is_zip:
            try:
                return _scan_zip(path, fh)
            except LoradexError:
                raise
            except _DAMAGED_ZIP as exc:
                raise InvalidFile(path, f"damaged torch zip archive: {exc}", hint="re-download it") from None
        fh.seek(0)
        data = fh.read()
    try:
        container = "pickle"
        count = _legacy_pickle_count(data)
        if count == 5:
            container = "torch-legacy"
        machine = _scan_stream(data, count)
    except (ValueError, EOFError) as exc:  # pickletools raises ValueError on malformed streams
        raise InvalidFile(path, f"damaged pickle: {_printable(str(exc))}", hint="re-download it") from None
    return _report(path, container, machine.found, machine.refused, ())


def _scan_zip(path: Path, fh) -> ScanReport:
    found: list[str] = []
    refused: list[str] = []
    members: list[str] = []
    with zipfile.ZipFile(fh) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".pkl"):
                continue
            if info.file_size > MAX_PICKLE_MEMBER:
                raise UnsafePickle(path, f"pickle member {info.filename} declares {info.file_size:,} bytes",
                                   hint="too large for a state dict's pickle; refusing to read it")
            members.append(info.filename)
            raw = zf.read(info)
            try:
                machine = _scan_stream(raw, file_size=path.stat().st_size)
            except (ValueError, EOFError) as exc:
                raise InvalidFile(path, f"damaged pickle {info.filename!r} in the zip archive: "
                                        f"{_printable(str(exc))}", hint="re-download it") from None
            found += machine.found
            refused += machine.refused
    if not any(m.endswith("data.pkl") for m in members):
        raise InvalidFile(path, "zip archive without a data.pkl: not a torch file",
                          hint="expected a .pt/.bin/.ckpt written by torch.save")
    return _report(path, "torch-zip", found, refused, members)


def _report(path, container, found, refused, members) -> ScanReport:
    names = tuple(sorted(set(found)))
    return ScanReport(path=str(path), container=container, globals=names,
                      disallowed=tuple(n for n in names if not is_allowed(n)), members=tuple(members),
                      refused_calls=tuple(dict.fromkeys(refused)))


def _printable(text: str) -> str:
    """One line: control characters (a global name carrying a newline…) escaped."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f]", lambda m: f"\\x{ord(m.group()):02x}", text)


def _resolve(names):
    import importlib

    out = []
    for full in names:
        module, _, attr = full.rpartition(".")
        try:
            out.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):
            raise UsageError(f"cannot resolve extra allowed global {full!r}") from None
    return out


def safe_load_pickle(path, *, extra_allowed=()) -> object:
    """Scan, refuse anything outside the allow-list, then ``torch.load(weights_only=True)`` on CPU.

    ``extra_allowed``: fully qualified globals the caller accepts beyond torch's list (for example
    ``torch.nn.modules.container.ParameterDict`` in old A1111 embeddings); they are also passed to
    torch as safe globals.
    """
    path = Path(path)
    report = scan_pickle(path)
    extra = set(extra_allowed)
    refused = [g for g in report.disallowed if g not in extra]
    if refused:
        shown = ", ".join(map(_printable, refused[:6])) + (f" … (+{len(refused) - 6} more)" if len(refused) > 6 else "")
        raise UnsafePickle(path, f"pickle imports globals outside torch's tensor allow-list: {shown}",
                           hint="loading it could run code; loradex will not load it")
    if report.refused_calls:
        raise UnsafePickle(path, f"pickle makes calls torch.save never writes: {_printable(report.refused_calls[0])}"
                                 + (f" (+{len(report.refused_calls) - 1} more)" if len(report.refused_calls) > 1 else ""),
                           hint="loading it could exhaust memory; loradex will not load it")
    import pickle

    import torch

    try:
        # An open file, not the path: torch.load hands any path ending in .safetensors to
        # safetensors whatever the bytes are (a pickle named so would then fail untyped).
        with open(path, "rb") as fh:
            if extra:
                with torch.serialization.safe_globals(_resolve(sorted(extra))):
                    return torch.load(fh, map_location="cpu", weights_only=True)
            return torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafePickle(path, f"torch's weights_only loader refused it: {first}",
                           hint="it needs globals beyond tensors; loradex will not load it") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidFile(path, f"cannot load pickle: {first}", hint="re-download it") from None
