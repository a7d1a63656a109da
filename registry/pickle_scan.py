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

``STACK_GLOBAL`` (protocol ≥ 4) takes module and name from the stack; we resolve them from the
string pushes and memo gets just before it. Anything we cannot resolve is reported as
``<unresolved STACK_GLOBAL>`` and refused (fail closed).
"""

from __future__ import annotations

import io
import pickletools
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidFile, LoradexError, UnsafePickle, UsageError

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
    return name in ALLOWED_GLOBALS or any(p.match(name) for p in _ALLOWED_PATTERNS)


@dataclass(frozen=True)
class ScanReport:
    path: str
    container: str  # "torch-zip" | "torch-legacy" | "pickle"
    globals: tuple[str, ...]  # every imported global, sorted, "module.qualname"
    disallowed: tuple[str, ...]  # those outside the allow-list
    members: tuple[str, ...] = ()  # pickles scanned (zip member names)

    @property
    def safe(self) -> bool:
        return not self.disallowed

    def to_dict(self) -> dict:
        return {"path": self.path, "container": self.container, "globals": list(self.globals),
                "disallowed": list(self.disallowed), "members": list(self.members)}


_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
                         "BINSTRING", "STRING"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


def _qualified(module: str, attr: str) -> str:
    # Protocol ≤ 2 pickles use Python 2 module names; unpickling maps them (pickle's fix_imports).
    from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING

    if (module, attr) in NAME_MAPPING:
        module, attr = NAME_MAPPING[(module, attr)]
    module = IMPORT_MAPPING.get(module, module)
    return f"{module}.{attr}"


def _globals_of_one(stream: io.BytesIO) -> list[str]:
    """Globals imported by the pickle starting at ``stream``'s position; leaves it after STOP."""
    found: list[str] = []
    memo: dict[int, object] = {}
    history: list[tuple[str, object]] = []  # (opcode, string value it pushed or None)
    for op, arg, _pos in pickletools.genops(stream):
        name = op.name
        value = None
        if name in _STRING_OPS:
            value = arg.decode("latin-1") if isinstance(arg, bytes) else arg
        elif name in _GET_OPS:
            value = memo.get(arg)
        elif name in _PUT_OPS or name == "MEMOIZE":
            top = history[-1][1] if history else None
            memo[arg if name != "MEMOIZE" else len(memo)] = top
            continue  # memo ops leave the stack as it is
        elif name in ("GLOBAL", "INST"):
            module, _, attr = arg.partition(" ")
            found.append(_qualified(module, attr))
        elif name == "STACK_GLOBAL":
            strings = [v for _, v in history[-2:]]
            if len(strings) == 2 and all(isinstance(s, str) for s in strings):
                found.append(_qualified(strings[0], strings[1]))
            else:
                found.append(UNRESOLVED)
        elif name in ("EXT1", "EXT2", "EXT4"):
            found.append(f"<copyreg extension {arg}>")
        history.append((name, value))
    return found


def _scan_stream(data: bytes, count: int = 1) -> list[str]:
    stream = io.BytesIO(data)
    found: list[str] = []
    for _ in range(count):
        found += _globals_of_one(stream)
    return found


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
        found = _scan_stream(data, count)
    except (ValueError, EOFError) as exc:  # pickletools raises ValueError on malformed streams
        raise InvalidFile(path, f"damaged pickle: {exc}", hint="re-download it") from None
    return _report(path, container, found, ())


def _scan_zip(path: Path, fh) -> ScanReport:
    found: list[str] = []
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
                found += _scan_stream(raw)
            except (ValueError, EOFError) as exc:
                raise InvalidFile(path, f"damaged pickle {info.filename!r} in the zip archive: {exc}",
                                  hint="re-download it") from None
    if not any(m.endswith("data.pkl") for m in members):
        raise InvalidFile(path, "zip archive without a data.pkl: not a torch file",
                          hint="expected a .pt/.bin/.ckpt written by torch.save")
    return _report(path, "torch-zip", found, members)


def _report(path, container, found, members) -> ScanReport:
    names = tuple(sorted(set(found)))
    return ScanReport(path=str(path), container=container, globals=names,
                      disallowed=tuple(n for n in names if not is_allowed(n)), members=tuple(members))


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
        shown = ", ".join(refused[:6]) + (f" … (+{len(refused) - 6} more)" if len(refused) > 6 else "")
        raise UnsafePickle(path, f"pickle imports globals outside torch's tensor allow-list: {shown}",
                           hint="loading it could run code; loradex will not load it")
    import pickle

    import torch

    try:
        if extra:
            with torch.serialization.safe_globals(_resolve(sorted(extra))):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafePickle(path, f"torch's weights_only loader refused it: {first}",
                           hint="it needs globals beyond tensors; loradex will not load it") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidFile(path, f"cannot load pickle: {first}", hint="re-download it") from None
