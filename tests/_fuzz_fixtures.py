"""Fuzz targets, oracles, seeds and mutators shared by tests/test_fuzz_*.py (small hypothesis runs)
and bench/fuzz_parsers.py (≥ 100,000 inputs per parser).

A target takes one input and returns "ok" (a result that passed the target's oracle) or "typed"
(a loradex error); anything else is a finding. Oracles check results against independent
answers: the reference ``safetensors`` reader for headers we accept, a recording unpickler (which
never imports anything) for the globals a pickle would import, round-trips for refs, and the
tag spans for prompts.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import random
import re
import signal
import struct
import tempfile
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from loradex.merge.conventions.prompt_syntax import parse_prompt
from loradex.registry.errors import LoradexError
from loradex.registry.files.pickle_scan import UNRESOLVED, scan_pickle
from loradex.registry.catalog.refs import parse_ref
from loradex.registry.files.safetensors_header import DTYPE_BITS, parse_header, read_header

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "files"
SCRATCH = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


class Finding(AssertionError):
    """An input that did not end in a typed error or a correct result."""


class Hang(BaseException):
    """Raised by the per-input alarm (BaseException so targets cannot swallow it)."""


@contextmanager
def time_limit(seconds: float):
    """Interrupt Python-level work after ``seconds`` (a C call that never returns to the
    interpreter is caught afterwards by the caller's elapsed-time check)."""
    def on_alarm(signum, frame):
        raise Hang(f"input took more than {seconds} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# --- safetensors header ------------------------------------------------------------------------
@dataclass(frozen=True)
class HeaderInput:
    """Header bytes (without the length prefix) of a file of ``file_size`` bytes; ``data`` is
    the whole file when it is small enough to have real bytes (then read_header and the
    reference reader see it too)."""

    head: bytes
    file_size: int
    data: bytes | None = None


def header_file(head: bytes, data_len: int, *, length: int | None = None) -> HeaderInput:
    n = len(head) if length is None else length
    size = 8 + len(head) + max(data_len, 0)
    if size <= 1 << 20:
        data = struct.pack("<Q", n % (1 << 64)) + head + bytes(max(data_len, 0))
        return HeaderInput(head, size, data)
    return HeaderInput(head, size, None)


def _reference(data: bytes):
    import safetensors

    try:
        return {name: (spec["dtype"], list(spec["shape"])) for name, spec in safetensors.deserialize(data)}
    except Exception:  # noqa: BLE001 - the reference's rejection, whatever its type
        return None


def target_header(inp: HeaderInput) -> str:
    try:
        if inp.data is not None:
            path = SCRATCH / f"loradex-fuzz-{os.getpid()}.safetensors"
            path.write_bytes(inp.data)
            header = read_header(path)
        else:
            header = parse_header(inp.head, inp.file_size)
    except LoradexError:
        return "typed"
    # oracle: what we accept is a well-formed file — tensors tile the data area exactly
    pos = 0
    for name, info in sorted(header.tensors.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if info.begin != pos or info.nbytes * 8 != math.prod(info.shape) * DTYPE_BITS[info.dtype]:
            raise Finding(f"accepted tensor {name!r} with inconsistent offsets {info}")
        pos = info.end
    if header.data_start + pos != header.file_size:
        raise Finding("accepted a header whose tensors do not cover the file")
    if inp.data is not None and all(t.dtype in _REFERENCE_DTYPES for t in header.tensors.values()):
        ref = _reference(inp.data)
        ours = {n: (t.dtype, list(t.shape)) for n, t in header.tensors.items()}
        if ref is None:
            raise Finding("accepted a file the reference safetensors reader rejects")
        if ref != ours:
            raise Finding(f"tensor table differs from the reference reader: {ours} vs {ref}")
    return "ok"


_REFERENCE_DTYPES = {"BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32",
                     "F32", "I64", "U64", "F64"}


# --- pickle scanner ----------------------------------------------------------------------------
class _Anything:
    """Stands in for every global a pickle asks for: callable, settable, never real code."""

    def __init__(self, *a, **k):
        pass

    def __call__(self, *a, **k):
        return _Anything()

    def __setstate__(self, state):
        pass

    def __reduce__(self):  # pragma: no cover - never pickled
        raise TypeError


class RecordingUnpickler(pickle._Unpickler):
    """Records every (module, name) the real unpickler would import; imports nothing. The
    pure-Python unpickler keeps its memo in a dict (as torch's weights_only unpickler does): the C
    one sizes an array by the PUT index, so ``LONG_BINPUT 826673714`` alone would take 6.6 GB."""

    def __init__(self, file, seen: set):
        super().__init__(file)
        self.seen = seen

    def find_class(self, module, name):
        self.seen.add(f"{module}.{name}")
        from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING

        m, n = NAME_MAPPING.get((module, name), (IMPORT_MAPPING.get(module, module), name))
        self.seen.add(f"{m}.{n}")
        return _Anything

    def persistent_load(self, pid):
        return None


def _imported_globals(data: bytes, streams: int) -> set:
    seen: set = set()
    stream = io.BytesIO(data)
    for _ in range(streams):
        try:
            RecordingUnpickler(stream, seen).load()
        except Hang:
            raise
        except BaseException:  # noqa: BLE001 - garbage stops the real unpickler too
            break
    return seen


def target_pickle(data: bytes) -> str:
    path = SCRATCH / f"loradex-fuzz-{os.getpid()}.pt"
    path.write_bytes(data)
    try:
        report = scan_pickle(path)
    except LoradexError:
        return "typed"
    if set(report.disallowed) - set(report.globals) or list(report.globals) != sorted(set(report.globals)):
        raise Finding("inconsistent scan report")
    if UNRESOLVED in report.globals or report.disallowed:
        return "ok"  # refused: fail closed
    # oracle: a pickle the scanner calls safe imports nothing outside its list
    if report.container == "torch-zip":
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            seen = set().union(*[_imported_globals(zf.read(m), 1) for m in report.members])
    else:
        seen = _imported_globals(data, 5 if report.container == "torch-legacy" else 1)
    missed = {g for g in seen if g not in report.globals}
    # the recorder adds both the raw and the Python-3 name; one of the two must be listed
    missed = {g for g in missed if not _either_listed(g, seen, report.globals)}
    if missed:
        raise Finding(f"scanner called the pickle safe but it imports {sorted(missed)}")
    return "ok"


def _either_listed(name: str, seen: set, listed) -> bool:
    from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING

    module, _, attr = name.rpartition(".")
    candidates = {name}
    for (m, a), (m2, a2) in NAME_MAPPING.items():
        if f"{m}.{a}" == name:
            candidates.add(f"{m2}.{a2}")
    candidates.add(f"{IMPORT_MAPPING.get(module, module)}.{attr}")
    return bool(candidates & set(listed))


# --- prompt syntax -----------------------------------------------------------------------------
TAG_RE = re.compile(r"<(lora|lyco):[^<>]*>", re.IGNORECASE)
NAME_FULL = re.compile(r"[a-z0-9][a-z0-9._-]*")


def target_prompt(prompt: str) -> str:
    try:
        parsed = parse_prompt(prompt)
    except LoradexError as exc:
        column = getattr(exc, "column", None)
        if column is not None and not (1 <= column <= len(prompt) + 1):
            raise Finding(f"error column {column} outside the prompt (length {len(prompt)})") from None
        return "typed"
    last = 0
    for tag in parsed.loras:
        span = prompt[tag.start:tag.end]
        if tag.start < last or not TAG_RE.fullmatch(span):
            raise Finding(f"tag span {tag.start}:{tag.end} = {span!r} is not one tag")
        last = tag.end
        if not (math.isfinite(tag.te_weight) and math.isfinite(tag.unet_weight)):
            raise Finding("non-finite weight accepted")
        if ":" in tag.name:
            kind, _, hexpart = tag.name.partition(":")
            if not re.fullmatch(r"[0-9a-f]{8,}", hexpart):
                raise Finding(f"bad hash ref accepted: {tag.name!r}")
        elif not NAME_FULL.fullmatch(tag.name):
            raise Finding(f"invalid adapter name accepted: {tag.name!r}")
    if len(parsed.loras) != len(TAG_RE.findall(prompt)):
        raise Finding("number of tags differs from the tags in the prompt")
    return "ok"


# --- refs --------------------------------------------------------------------------------------
def target_ref(text: str) -> str:
    try:
        ref = parse_ref(text)
    except LoradexError:
        return "typed"
    if ref.is_hash:
        if not re.fullmatch(r"[0-9a-f]{8,}", ref.hash_prefix or ""):
            raise Finding(f"hash ref with bad prefix accepted: {ref!r}")
    else:
        if not NAME_FULL.fullmatch(ref.name or ""):
            raise Finding(f"ref with invalid name accepted: {text!r} → name {ref.name!r}")
        if not (ref.is_version or re.fullmatch(r"[a-z][a-z0-9._-]*", ref.selector)):
            raise Finding(f"ref with invalid selector accepted: {text!r} → {ref.selector!r}")
    again = parse_ref(str(ref))
    if again != ref:
        raise Finding(f"ref does not round-trip: {text!r} → {ref} → {again}")
    return "ok"


TARGETS = {"safetensors_header": target_header, "pickle_scan": target_pickle,
           "prompt_syntax": target_prompt, "refs": target_ref}


# --- running one input -------------------------------------------------------------------------
@dataclass
class Stats:
    inputs: int = 0
    ok: int = 0
    typed: int = 0
    findings: list[str] = field(default_factory=list)
    max_seconds: float = 0.0
    slowest: str = ""


def run_input(target: str, inp, stats: Stats, *, limit: float = 2.0) -> None:
    """Run one input; record its outcome, time, and any finding (never raises for the input)."""
    t = time.perf_counter()
    try:
        with time_limit(limit):
            outcome = TARGETS[target](inp)
    except (Finding, Hang) as exc:
        outcome, note = "finding", f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - an uncaught exception is what we hunt for
        outcome, note = "finding", f"uncaught {type(exc).__name__}: {str(exc)[:200]}"
    elapsed = time.perf_counter() - t
    stats.inputs += 1
    if outcome == "finding":
        stats.findings.append(f"{note} — input {describe(inp)}")
    else:
        setattr(stats, outcome, getattr(stats, outcome) + 1)
        if elapsed > limit:
            stats.findings.append(f"slow: {elapsed:.2f} s (C-level, not interruptible) — input {describe(inp)}")
    if elapsed > stats.max_seconds:
        stats.max_seconds, stats.slowest = elapsed, describe(inp)


def describe(inp) -> str:
    if isinstance(inp, HeaderInput):
        return f"header {inp.head[:120]!r}{'…' if len(inp.head) > 120 else ''} ({len(inp.head)} B, file {inp.file_size} B)"
    return repr(inp[:160]) + ("…" if len(inp) > 160 else "") + f" ({len(inp)} chars/bytes)"


# --- seeds -------------------------------------------------------------------------------------
def corpus_headers() -> list[tuple[dict, int]]:
    """(header JSON object, data length) of every readable safetensors file in the corpus."""
    out = []
    if not CORPUS.is_dir():
        return out
    for path in sorted(CORPUS.glob("*.safetensors")):
        try:
            h = read_header(path)
        except LoradexError:
            continue
        with open(path, "rb") as fh:
            fh.seek(8)
            out.append((json.loads(fh.read(h.header_length)), h.data_length))
    return out


def synthetic_headers() -> list[tuple[dict, int]]:
    obj = {"__metadata__": {"ss_network_module": "networks.lora"},
           "lora_unet_x.alpha": {"dtype": "F16", "shape": [], "data_offsets": [0, 2]},
           "lora_unet_x.lora_down.weight": {"dtype": "F32", "shape": [2, 4], "data_offsets": [2, 34]},
           "lora_unet_x.lora_up.weight": {"dtype": "BF16", "shape": [4, 2], "data_offsets": [34, 50]}}
    return [(obj, 50), ({}, 0), ({"a": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]}}, 3)]


def pickle_seeds() -> list[bytes]:
    seeds = []
    if CORPUS.is_dir():
        seeds += [p.read_bytes() for p in sorted(CORPUS.iterdir())
                  if p.suffix in (".pt", ".bin", ".ckpt") and p.stat().st_size < 1 << 20]
    payload = {"emb": [1.0, 2.0], "name": "x", "n": 3}
    seeds += [pickle.dumps(payload, protocol=p) for p in range(6)]
    seeds += [pickle.dumps(io.BytesIO, protocol=p) for p in (0, 2, 4)]  # imports a global
    return seeds


PROMPT_SEEDS = ["a photo of <lora:style@production:0.8>, masterpiece",
                "<lora:a:0.5:0.7> <lyco:b@1.2.0:te=0.3:unet=1> <my-emb> text",
                "<lora:sha256:0123abcd:1.0>, x\n<lora:c@latest>", "plain prompt, no tags"]
REF_SEEDS = ["style", "style@1.2.0", "style@production", "sha256:0123456789abcdef", "autov2:ABCDEF0123",
             "a.b-c_d@1.0.0-rc.1+build.5", "x@latest"]


# --- mutation ----------------------------------------------------------------------------------
INTERESTING_INTS = [0, 1, -1, 7, 8, 255, 2**15, 2**16, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1,
                    2**63, 2**64 - 1, 2**64, 10**30, -(2**63), 99_999_999, 100_000_001]
HUGE_INT_TEXT = ["1" + "0" * 4000, "9" * 4299, "1" + "0" * 5000]  # > 4300 digits: int() refuses


def mutate_bytes(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(10)
        n = len(b)
        if op == 0 and n:
            b[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            b[rng.randrange(n)] = rng.choice([0, 0xFF, 0x7F, 0x80, 0xC0, 0xFE, ord("{"), ord("["), ord('"')])
        elif op == 2:
            i = rng.randint(0, n)
            b[i:i] = os.urandom(rng.randint(1, 16)) if rng.random() < 0.5 else rng.choice(pool)[:64]
        elif op == 3 and n:
            i = rng.randrange(n)
            del b[i:i + rng.randint(1, 64)]
        elif op == 4 and n:
            del b[rng.randrange(n + 1):]
        elif op == 5 and n:
            i = rng.randrange(n)
            j = min(n, i + rng.randint(1, 128))
            b[i:i] = b[i:j] * rng.randint(1, 20)
        elif op == 6 and n >= 8:
            i = rng.randrange(max(1, n - 7))
            b[i:i + 8] = struct.pack("<Q", rng.choice(INTERESTING_INTS) % (1 << 64))
        elif op == 7:
            digits = [m.span() for m in re.finditer(rb"[0-9]+", bytes(b))]
            if digits:
                s, e = rng.choice(digits)
                new = rng.choice([str(rng.choice(INTERESTING_INTS)), rng.choice(HUGE_INT_TEXT), "-5", "1.5",
                                  "1e400", "NaN", "Infinity"])
                b[s:e] = new.encode()
        elif op == 8:
            i = rng.randint(0, n)
            depth = rng.choice([10, 1000, 100_000])
            b[i:i] = b"[" * depth
        else:
            other = rng.choice(pool)
            i, j = rng.randint(0, n), rng.randint(0, len(other))
            b = b[:i] + bytearray(other[j:j + rng.randint(1, 256)]) + b[i:]
    return bytes(b)


DTYPES = list(DTYPE_BITS) + ["F128", "", "f32", None, 5]


def _rand_value(rng: random.Random):
    return rng.choice([rng.choice(INTERESTING_INTS), -rng.randint(1, 9), 1.5, "4", None, True, [], {},
                       [[1]], rng.randrange(100)])


def mutate_header(rng: random.Random, obj: dict, data_len: int) -> HeaderInput:
    """Structure-aware mutation: keep the JSON valid so the check reaches the tensor table."""
    obj = json.loads(json.dumps(obj))
    names = [k for k in obj if k != "__metadata__"]
    raw_edits: list[tuple[str, str]] = []
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(11)
        name = rng.choice(names) if names else None
        spec = obj.get(name) if name else None
        if op == 0 and isinstance(spec, dict) and isinstance(spec.get("shape"), list):
            shape = spec["shape"]
            if shape and rng.random() < 0.8:
                shape[rng.randrange(len(shape))] = _rand_value(rng)
            else:
                big = rng.choice(HUGE_INT_TEXT[:2] + ["4294967296", "18446744073709551616"])
                # many huge dims cost the current parser seconds each: keep them rare
                k = rng.choice([2] * 40 + [3] * 40 + [50] * 3 + [300])
                marker = f"@@shape{len(raw_edits)}@@"
                spec["shape"] = marker
                raw_edits.append((json.dumps(marker), "[" + ",".join([big] * k) + "]"))
        elif op == 1 and isinstance(spec, dict):
            offs = spec.get("data_offsets")
            if isinstance(offs, list) and offs:
                offs[rng.randrange(len(offs))] = _rand_value(rng)
            else:
                spec["data_offsets"] = [_rand_value(rng), _rand_value(rng)]
        elif op == 2 and isinstance(spec, dict):
            spec["dtype"] = rng.choice(DTYPES)
        elif op == 3 and len(names) >= 2:
            a, b = rng.sample(names, 2)
            if isinstance(obj[a], dict) and isinstance(obj[b], dict):
                obj[a]["data_offsets"], obj[b]["data_offsets"] = obj[b].get("data_offsets"), obj[a].get("data_offsets")
        elif op == 4 and name:
            raw_edits.append(("{", "{" + json.dumps(name) + ":" + json.dumps(obj[name]) + ","))  # duplicate key
        elif op == 5:
            obj["__metadata__"] = rng.choice([{"k": 1}, [], "x", {"k": {"n": 1}}, {"ok": "v"}, None])
        elif op == 6:
            marker = "@@deep@@"
            obj[f"deep{rng.randrange(9)}"] = marker
            depth = rng.choice([50, 5000, 200_000])
            raw_edits.append((json.dumps(marker), "[" * depth + "]" * depth))
        elif op == 7 and name:
            del obj[name]
            names.remove(name)
        elif op == 8:
            obj[f"extra{rng.randrange(99)}"] = {"dtype": rng.choice(DTYPES), "shape": [rng.randrange(4)],
                                                "data_offsets": [data_len, data_len + rng.randrange(16)]}
        elif op == 9 and name:
            obj[name] = _rand_value(rng)
        else:
            raw_edits.append(("@@nonutf8@@", ""))
    text = json.dumps(obj)
    for old, new in raw_edits:
        text = text.replace(old, new, 1)
    head = text.encode()
    if ("@@nonutf8@@", "") in raw_edits:
        i = rng.randrange(len(head))
        head = head[:i] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"]) + head[i:]
    head += b" " * rng.choice([0, 0, 0, 3, 7])
    choice = rng.random()
    if choice < 0.7:
        size_delta = 0
    elif choice < 0.85:
        size_delta = rng.choice([-1, 1, -8, 4096])
    else:
        size_delta = rng.choice(INTERESTING_INTS)
    data = data_len + size_delta
    if data < 0:
        data = 0
    inp = header_file(head, data)
    if choice > 0.95 and inp.data is not None:  # lie about the header length in the prefix
        n = rng.choice(INTERESTING_INTS) % (1 << 64)
        inp = HeaderInput(head, inp.file_size, struct.pack("<Q", n) + inp.data[8:])
    return inp


def mutate_text(rng: random.Random, text: str, alphabet: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 5)):
        op = rng.randrange(7)
        n = len(chars)
        if op == 0 and n:
            chars[rng.randrange(n)] = rng.choice(alphabet)
        elif op == 1:
            chars.insert(rng.randint(0, n), rng.choice(alphabet))
        elif op == 2 and n:
            del chars[rng.randrange(n)]
        elif op == 3:
            i = rng.randint(0, n)
            chars[i:i] = list(rng.choice(["<lora:", ">", ":", "@", "=", "te=", "1e308", "1e999", "nan", "\n",
                                          "sha256:", "\x00", "\u0660", "ß", "İ", "\ud800", "<<", "..", "-"]))
        elif op == 4 and n:
            i = rng.randrange(n)
            chars[i:i] = chars[i:i + rng.randint(1, 20)] * rng.randint(1, 50)
        elif op == 5 and n:
            del chars[rng.randrange(n):]
        else:
            i = rng.randint(0, n)
            chars[i:i] = list(rng.choice(["9" * 5000, "1." + "0" * 400, "<lora:" * 200, ":" * 500]))
    return "".join(chars)


PROMPT_ALPHABET = "abcxyz019._-@:<>=, \t\n+-eE.LORAlyco\u00e9\u0130\u212a"
REF_ALPHABET = "abcxyz0189._-@:+ \n\tABCDEFabcdef\u0130\u212a\u00df\u0660"


def mutation_input(target: str, rng: random.Random, seeds: dict) -> object:
    if target == "safetensors_header":
        if rng.random() < 0.6:
            obj, data_len = rng.choice(seeds["headers"])
            return mutate_header(rng, obj, data_len)
        base = rng.choice(seeds["header_files"])
        data = mutate_bytes(rng, base, seeds["header_files"])
        if len(data) >= 8:
            (n,) = struct.unpack("<Q", data[:8])
            return HeaderInput(data[8:8 + n] if n < len(data) else data[8:], len(data), data)
        return HeaderInput(b"", len(data), data)
    if target == "pickle_scan":
        return mutate_bytes(rng, rng.choice(seeds["pickles"]), seeds["pickles"])
    if target == "prompt_syntax":
        return mutate_text(rng, rng.choice(PROMPT_SEEDS), PROMPT_ALPHABET)
    return mutate_text(rng, rng.choice(REF_SEEDS), REF_ALPHABET)


def load_seeds() -> dict:
    headers = corpus_headers() + synthetic_headers()
    files = []
    for obj, data_len in headers:
        head = json.dumps(obj).encode()
        if data_len <= 64 * 1024:
            files.append(struct.pack("<Q", len(head)) + head + bytes(data_len))
        else:  # keep whole-file mutation fast: the header and a short data area
            files.append(struct.pack("<Q", len(head)) + head + bytes(256))
    return {"headers": headers, "header_files": files, "pickles": pickle_seeds()}
