"""Strict reading of a safetensors header, without reading tensor data.

Layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the tensor data.
Checked here (what the reference reader checks, see FORMATS.md): N ≤ 100,000,000 and
N ≤ file size − 8; the JSON starts with ``{`` (trailing whitespace allowed) and is an object;
``__metadata__`` maps strings to strings; each tensor has a known dtype, a shape of
non-negative ints and ``data_offsets`` [begin, end]; sorted by offset the tensors tile the data
area from 0 with no gap and no overlap; end − begin = element count × dtype size; header +
data = file length. Header lengths need not be multiples of 8. An element count that overflows
64 bits (an empty tensor's dims included) or needs more bytes than the file holds is an invalid
header, checked without ever multiplying past the file size.

Every dtype of ``DTYPE_BITS`` is a valid header; which ones an adapter may hold (F8 up-cast,
integers only as a one-element alpha, BOOL/F4/F6/F8_E8M0/C64 refused) is the rule of
``registry.probe.tensor_rules``. ``decode_scalar`` reads alphas of every float (F8 included) and
integer dtype.

Only the 8 + N header bytes are read, and N is checked against the file size before any
buffer is allocated, so a hostile length cannot make us allocate gigabytes.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidFile
from ..untrusted import no_duplicate_keys

MAX_HEADER_LENGTH = 100_000_000
MAX_U64 = 2**64 - 1  # shapes and offsets are usize in the reference reader

# Bits per element: F4/F6 are packed sub-byte types (a tensor's byte size must still be whole).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}

REDOWNLOAD = "re-download it or get it again from its source"


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offset in the data area (after the header)
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class SafetensorsHeader:
    header_length: int
    metadata: dict[str, str]
    tensors: dict[str, TensorInfo]
    file_size: int
    data_start: int = field(default=0)  # 8 + header_length: absolute offset of tensor data

    @property
    def data_length(self) -> int:
        return self.file_size - self.data_start


def _fmt(n: int) -> str:
    return f"{n:,}"


def read_header(path) -> SafetensorsHeader:
    """Read and validate the header of the safetensors file at ``path``.

    Raises :class:`InvalidFile` with a one-line message (what is wrong, what to do).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 8:
                raise InvalidFile(path, f"too short for a safetensors file ({size} bytes; the first 8 bytes "
                                        "give the header length)", hint=REDOWNLOAD)
            (n,) = struct.unpack("<Q", fh.read(8))
            _check_length(path, n, size)
            head = fh.read(n)
    except IsADirectoryError:
        raise InvalidFile(path, "is a directory, not a safetensors file") from None
    except FileNotFoundError:
        raise InvalidFile(path, "no such file") from None
    if len(head) != n:  # file shrank while we read it
        raise InvalidFile(path, f"truncated: header says {_fmt(n)} header bytes but only {_fmt(len(head))} "
                                "could be read", hint=REDOWNLOAD)
    return parse_header(head, size, path=path)


def _check_length(path, n: int, size: int) -> None:
    if n > MAX_HEADER_LENGTH:
        raise InvalidFile(path, f"not a safetensors file: header length {_fmt(n)} exceeds the "
                                f"{_fmt(MAX_HEADER_LENGTH)}-byte limit", hint="check what the file really is")
    if n > size - 8:
        raise InvalidFile(path, f"truncated or not safetensors: header length {_fmt(n)} but the file has only "
                                f"{_fmt(size - 8)} bytes after the length field", hint=REDOWNLOAD)
    if n < 2:
        raise InvalidFile(path, f"not a safetensors file: header length {n} is too small for a JSON object",
                          hint="check what the file really is")


def parse_header(head: bytes, file_size: int, *, path="<bytes>") -> SafetensorsHeader:
    """Validate header bytes ``head`` (without the 8-byte length) of a file of ``file_size`` bytes."""
    n = len(head)
    _check_length(path, n, file_size)
    if head[:1] != b"{":
        raise InvalidFile(path, "bad header: the JSON does not start with '{'", hint="the file is damaged; "
                          + REDOWNLOAD)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidFile(path, f"bad header: not valid UTF-8 at byte {exc.start}", hint=REDOWNLOAD) from None
    try:
        obj = json.loads(text, object_pairs_hook=no_duplicate_keys)
    except RecursionError:
        raise InvalidFile(path, "bad header: JSON nested too deeply", hint="the file is damaged or hostile; "
                          + REDOWNLOAD) from None
    except ValueError as exc:
        msg = str(exc).splitlines()[0]
        raise InvalidFile(path, f"bad header: invalid JSON ({msg})", hint=REDOWNLOAD) from None
    if not isinstance(obj, dict):
        raise InvalidFile(path, "bad header: JSON is not an object", hint=REDOWNLOAD)

    metadata = _parse_metadata(path, obj.pop("__metadata__", None))
    data_length = file_size - 8 - n
    tensors: dict[str, TensorInfo] = {}
    for name, spec in obj.items():
        tensors[name] = _parse_tensor(path, name, spec, data_length)

    ordered = sorted(tensors.items(), key=lambda kv: (kv[1].begin, kv[1].end))
    pos = 0
    for name, info in ordered:
        if info.begin > pos:
            raise InvalidFile(path, f"bad header: gap of {_fmt(info.begin - pos)} bytes before tensor {name!r} "
                                    f"(data offset {_fmt(pos)})", hint=REDOWNLOAD)
        if info.begin < pos:
            raise InvalidFile(path, f"bad header: tensor {name!r} overlaps the previous tensor "
                                    f"(starts at {_fmt(info.begin)}, previous ends at {_fmt(pos)})",
                              hint=REDOWNLOAD)
        pos = info.end
    if pos > data_length:
        raise InvalidFile(path, f"truncated: header says {_fmt(pos)} bytes of tensor data but the file has "
                                f"{_fmt(data_length)}", hint=REDOWNLOAD)
    if pos < data_length:
        raise InvalidFile(path, f"bad file: {_fmt(data_length - pos)} unexpected bytes after the "
                                f"{_fmt(pos)} bytes of tensor data the header describes", hint=REDOWNLOAD)
    return SafetensorsHeader(header_length=n, metadata=metadata, tensors=tensors, file_size=file_size,
                             data_start=8 + n)


def _parse_metadata(path, raw) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidFile(path, "bad header: __metadata__ is not an object", hint=REDOWNLOAD)
    for key, value in raw.items():
        if not isinstance(value, str):
            raise InvalidFile(path, f"bad header: __metadata__[{key!r}] is {type(value).__name__}, "
                                    "safetensors metadata values must be strings",
                              hint="rewrite the metadata with string values")
    return dict(raw)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _parse_tensor(path, name: str, spec, data_length: int) -> TensorInfo:
    if not isinstance(spec, dict):
        raise InvalidFile(path, f"bad header: entry {name!r} is not a tensor description", hint=REDOWNLOAD)
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if dtype not in DTYPE_BITS:
        raise InvalidFile(path, f"bad header: tensor {name!r} has unknown dtype {dtype!r}",
                          hint="known dtypes: " + " ".join(DTYPE_BITS))
    # No raw shape/offsets in messages until they are bounded by the file size: a hostile header can
    # hold numbers of thousands of digits, and str() of one past 4300 digits raises ValueError.
    if not isinstance(shape, list) or not all(_is_int(d) and 0 <= d <= MAX_U64 for d in shape):
        raise InvalidFile(path, f"bad header: tensor {name!r} shape is not a list of non-negative 64-bit "
                                "integers", hint=REDOWNLOAD)
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(_is_int(o) and 0 <= o <= MAX_U64 for o in offsets) or offsets[0] > offsets[1]):
        raise InvalidFile(path, f"bad header: tensor {name!r} data_offsets are not [begin, end] with "
                                "0 ≤ begin ≤ end < 2**64", hint=REDOWNLOAD)
    expected = _size_in_bits(shape, DTYPE_BITS[dtype], data_length)
    if expected is None:
        raise InvalidFile(path, f"bad header: tensor {name!r} ({dtype}, {len(shape)} dims) has an element count "
                                f"that overflows 64 bits or needs more than the file's {_fmt(data_length)} bytes "
                                "of tensor data", hint=REDOWNLOAD)
    if expected % 8:
        raise InvalidFile(path, f"bad header: tensor {name!r} ({dtype} {tuple(shape)}) holds {_fmt(expected)} "
                                "bits, not a whole number of bytes", hint=REDOWNLOAD)
    if offsets[1] - offsets[0] != expected // 8:
        raise InvalidFile(path, f"bad header: tensor {name!r} ({dtype} {tuple(shape)}) needs "
                                f"{_fmt(expected // 8)} bytes but its offsets span {_fmt(offsets[1] - offsets[0])}",
                          hint=REDOWNLOAD)
    return TensorInfo(dtype=dtype, shape=tuple(shape), begin=offsets[0], end=offsets[1])


def _size_in_bits(shape: list[int], bits: int, data_length: int) -> int | None:
    """Size in bits of a tensor, or None when it would exceed ``data_length`` bytes or its element
    count overflows 64 bits (dims of an empty tensor included).

    A 0 anywhere makes the tensor empty whatever the other dims are; otherwise every running
    product is checked against the file, so the multiplication never grows past the file size
    (math.prod of huge dims is quadratic in their digits: a minute for a 1.2 MB header)."""
    if 0 in shape:  # empty, but the element count must still fit in 64 bits (as the reference reader's)
        total = 1
        for d in shape:
            total *= d or 1
            if total > MAX_U64:
                return None
        return 0
    limit = data_length * 8
    total = bits
    for d in shape:
        if d > limit:  # cheap comparison before the multiplication
            return None
        total *= d
        if total > limit:
            return None
    return total


# --- small scalar reads (alphas) ----------------------------------------------------------
_SCALAR_FORMATS = {"F64": "<d", "F32": "<f", "F16": "<e", "I64": "<q", "I32": "<i", "I16": "<h", "I8": "<b",
                   "U8": "<B", "U16": "<H", "U32": "<I", "U64": "<Q", "BOOL": "<?"}
_BYTE_DECODED = ("BF16", "F8_E5M2", "F8_E4M3")


def _f8_e4m3(byte: int) -> float:
    """float8_e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities, S.1111.111 is NaN."""
    sign = -1.0 if byte & 0x80 else 1.0
    exp, man = (byte >> 3) & 0xF, byte & 0x7
    if exp == 0xF and man == 0x7:
        return math.nan
    if exp == 0:
        return sign * man / 8 * 2.0 ** -6
    return sign * (1 + man / 8) * 2.0 ** (exp - 7)


def decode_scalar(dtype: str, raw: bytes) -> float:
    """The value of a one-element tensor stored as ``raw`` bytes."""
    if dtype == "BF16":  # bfloat16 is the top half of a float32
        return struct.unpack("<f", b"\x00\x00" + raw[:2])[0]
    if dtype == "F8_E5M2":  # float8_e5m2 is the top half of a float16
        return struct.unpack("<e", b"\x00" + raw[:1])[0]
    if dtype == "F8_E4M3":
        return _f8_e4m3(raw[0])
    fmt = _SCALAR_FORMATS.get(dtype)
    if fmt is None:
        raise ValueError(f"cannot decode a {dtype} scalar")
    return float(struct.unpack(fmt, raw[: struct.calcsize(fmt)])[0])


def read_scalars(path, header: SafetensorsHeader, names) -> dict[str, float]:
    """Values of one-element tensors (kohya ``.alpha``): a few bytes each, read by offset."""
    out: dict[str, float] = {}
    with open(path, "rb") as fh:
        for name in names:
            info = header.tensors[name]
            if info.numel != 1 or (info.dtype not in _SCALAR_FORMATS and info.dtype not in _BYTE_DECODED):
                continue
            fh.seek(header.data_start + info.begin)
            out[name] = decode_scalar(info.dtype, fh.read(info.nbytes))
    return out
