"""Hostile tensor files and pickles (issue 15): one rule per dtype, malformed LoRA modules named,
NaN/Inf refused per module unless --allow-nonfinite, and pickles that would allocate gigabytes
under torch's weights-only allow-list refused by the static scan.

Every command runs through the CLI entry point in-process (``loradex.cli.main.main``: the same
argument parsing and error-to-one-line path as the console script). Hostile pickles are built
opcode by opcode and only ever scanned: nothing here unpickles them with plain ``pickle``, and
the weights-only loader is reached only after the scan has been asserted to refuse them.
"""

from __future__ import annotations

import json
import struct

import pytest
import torch

from _formats_fixtures import write_raw
from loradex.merge.synthetic_adapters import random_kohya_state_dict
from loradex.registry.errors import InvalidFile, UnsafePickle
from loradex.registry.files.pickle_scan import safe_load_pickle, scan_pickle
from loradex.registry.files.safetensors_header import parse_header

MODULES = {"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q": (64, 64),
           "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_k": (64, 64),
           "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (32, 32)}
MOD_Q, MOD_K, MOD_TE = sorted(MODULES)[1], sorted(MODULES)[0], sorted(MODULES)[2]
META = {"ss_network_module": "networks.lora", "ss_base_model_version": "sd_v1"}


def cli(capsys, *args) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``loradex ARGS``; never an internal error (exit 3)."""
    from loradex.cli.main import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    assert code != 3 and "Traceback" not in err and "internal error" not in err, (args, err)
    if code:
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, (args, err)
    return code, out, err


def lora_sd(seed=0, **kw):
    return random_kohya_state_dict(MODULES, rank=4, alpha=2.0, seed=seed, **kw)


def save(path, sd):
    from safetensors.torch import save_file

    save_file(sd, str(path), metadata=META)
    return path


def raw_lora(path, dtype, *, alpha_dtype="F32"):
    """A kohya LoRA whose factors are ``dtype`` (zero data, header written by hand)."""
    tensors = {}
    for name, (fan_in, fan_out) in sorted(MODULES.items()):
        tensors[f"{name}.alpha"] = (alpha_dtype, ())
        tensors[f"{name}.lora_down.weight"] = (dtype, (4, fan_in))
        tensors[f"{name}.lora_up.weight"] = (dtype, (fan_out, 4))
    return write_raw(path, tensors, META)


def catalog_names():
    from loradex.registry.catalog.store import Catalog

    return [a.name for a in Catalog().list_adapters()]


def add_unchecked(monkeypatch, capsys, path, name):
    """Register ``path`` as a blob added before the tensor rules existed (the probe's check off)."""
    import loradex.registry.probe.probing as probing

    with monkeypatch.context() as m:
        m.setattr(probing, "check_view", lambda *a, **k: None)
        assert cli(capsys, "add", path, "--name", name)[0] == 0


# --- dtypes -------------------------------------------------------------------------------------
REFUSED_DTYPES = ["I8", "U8", "I32", "BOOL", "C64", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4"]


@pytest.mark.parametrize("dtype", REFUSED_DTYPES)
def test_unusable_dtypes_are_refused_by_add_inspect_convert_and_merge(dtype, tmp_path, capsys, monkeypatch):
    src = raw_lora(tmp_path / f"w_{dtype}.safetensors", dtype)
    for args in (["add", src, "--name", "bad"], ["inspect", src],
                 ["convert", src, "--to", "diffusers", "-o", tmp_path / "out.safetensors"]):
        code, _, err = cli(capsys, *args)
        assert code == 1 and f"({dtype})" in err and "cannot use as adapter weights" in err, (args, err)
    assert catalog_names() == [] and not (tmp_path / "out.safetensors").exists()
    # a blob stored before the rule: merge and resize refuse it the same way, never exit 3
    save(tmp_path / "ok.safetensors", lora_sd())
    assert cli(capsys, "add", tmp_path / "ok.safetensors", "--name", "ok")[0] == 0
    add_unchecked(monkeypatch, capsys, src, "old")
    for args in (["merge", "ok@1.0.0", "old@1.0.0", "--name", "m"], ["resize", "old@1.0.0", "--rank", "2"]):
        code, _, err = cli(capsys, *args)
        assert code == 1 and f"({dtype})" in err, (args, err)
    assert sorted(catalog_names()) == ["ok", "old"]


def test_integer_alpha_is_accepted_and_read(tmp_path, capsys):
    src = raw_lora(tmp_path / "int_alpha.safetensors", "F16", alpha_dtype="I64")
    code, out, _ = cli(capsys, "inspect", src, "--json")
    assert code == 0 and json.loads(out)["alphas"] == [0.0]  # zero-filled data: alpha 0 (= rank)


@pytest.mark.parametrize("f8", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_f8_adapters_are_upcast_for_add_inspect_merge_resize_and_convert(f8, tmp_path, capsys):
    from loradex.merge.conventions.adapter_io import open_adapter, open_version
    from loradex.merge.math.lora_module import delta_weight

    sd = {k: v.to(f8) for k, v in lora_sd().items()}  # alpha 2.0 is exact in both F8 types
    src = save(tmp_path / "f8.safetensors", sd)
    save(tmp_path / "ok.safetensors", lora_sd(seed=1))
    code, out, _ = cli(capsys, "inspect", src, "--json")
    facts = json.loads(out)
    st_name = {torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2"}[f8]
    assert code == 0 and facts["dtypes"] == [st_name] and facts["alphas"] == [2.0] and facts["ranks"] == [4]
    assert cli(capsys, "add", src, "--name", "f8")[0] == 0
    assert cli(capsys, "add", tmp_path / "ok.safetensors", "--name", "ok")[0] == 0
    for method in ("concat", "svd"):
        code, _, err = cli(capsys, "merge", "f8@1.0.0", "ok@1.0.0", "--name", f"m-{method}", "--method", method,
                           "--rank", "8", "--dtype", "fp32")
        assert code == 0, err
    assert cli(capsys, "resize", "f8@1.0.0", "--rank", "2", "--name", "small")[0] == 0
    # known answer: both merges are the sum of the up-cast inputs' ΔW (rank 8 holds both rank-4 inputs)
    from loradex.registry.catalog.store import Catalog

    catalog = Catalog()
    a = open_adapter(src, base="sd1").load_all()
    b = open_version(catalog, "ok@1.0.0")[1].load_all()
    for ref in ("m-concat@1.0.0", "m-svd@1.0.0"):
        merged = open_version(catalog, ref)[1].load_all()
        assert sorted(merged) == sorted(MODULES)
        for name in MODULES:
            want = delta_weight(a[name]) + delta_weight(b[name])
            assert torch.allclose(delta_weight(merged[name]), want, atol=1e-5), (ref, name)
    assert a[MOD_Q].down.dtype == torch.float32 and a[MOD_Q].alpha == 2.0
    # convert renames keys and keeps the F8 values exactly
    out = tmp_path / "f8_diffusers.safetensors"
    code, _, err = cli(capsys, "convert", src, "--to", "diffusers", "-o", out)
    assert code == 0, err
    from safetensors.torch import load_file

    converted = load_file(str(out))
    assert {t.dtype for k, t in converted.items() if "lora" in k} == {f8}
    assert sorted(float(t.float().abs().sum()) for k, t in converted.items() if "lora" in k) == \
        sorted(float(t.float().abs().sum()) for k, t in sd.items() if "lora_" in k.split(".", 1)[1])


def test_header_element_count_overflow_is_an_invalid_header():
    for shape in ([2**63, 2**63, 0], [2**64 - 1, 2, 0], [0, 2**40, 2**40]):
        head = json.dumps({"t": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}}).encode()
        with pytest.raises(InvalidFile, match="overflows 64 bits") as info:
            parse_header(head, 8 + len(head))
        assert "\n" not in str(info.value)
    head = json.dumps({"t": {"dtype": "F32", "shape": [2**40], "data_offsets": [0, 4]}}).encode()
    with pytest.raises(InvalidFile, match="needs more than the file"):
        parse_header(head, 8 + len(head) + 4)
    ok = json.dumps({"t": {"dtype": "F32", "shape": [2**30, 0], "data_offsets": [0, 0]}}).encode()
    assert parse_header(ok, 8 + len(ok)).tensors["t"].numel == 0


# --- malformed LoRA modules ---------------------------------------------------------------------
def _alpha_vector(sd):
    sd[f"{MOD_Q}.alpha"] = torch.tensor([1.0, 2.0])


def _rank0(sd):
    sd[f"{MOD_Q}.lora_down.weight"] = torch.zeros(0, 64)
    sd[f"{MOD_Q}.lora_up.weight"] = torch.zeros(64, 0)


def _lone_up(sd):
    del sd[f"{MOD_Q}.lora_down.weight"]


def _lone_down(sd):
    del sd[f"{MOD_Q}.lora_up.weight"]


def _rank_mismatch(sd):
    sd[f"{MOD_Q}.lora_up.weight"] = torch.zeros(64, 3)


MALFORMED = {"alpha_vector": (_alpha_vector, "alpha has shape (2,), not one value"),
             "rank0": (_rank0, "rank 0"),
             "lone_up": (_lone_up, "lora_up without its lora_down"),
             "lone_down": (_lone_down, "lora_down without its lora_up"),
             "rank_mismatch": (_rank_mismatch, "lora_down has rank 4 but lora_up has 3")}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_modules_are_named_at_add_inspect_convert_and_merge(case, tmp_path, capsys, monkeypatch):
    edit, why = MALFORMED[case]
    sd = lora_sd()
    edit(sd)
    src = save(tmp_path / f"{case}.safetensors", sd)
    for args in (["add", src, "--name", "bad"], ["inspect", src],
                 ["convert", src, "--to", "peft", "-o", tmp_path / "out.safetensors"]):
        code, _, err = cli(capsys, *args)
        assert code == 1 and f"{MOD_Q}: {why}" in err and "1 malformed LoRA module" in err, (args, err)
    assert catalog_names() == []
    save(tmp_path / "ok.safetensors", lora_sd(seed=1))
    assert cli(capsys, "add", tmp_path / "ok.safetensors", "--name", "ok")[0] == 0
    add_unchecked(monkeypatch, capsys, src, "old")
    for args in (["merge", "ok@1.0.0", "old@1.0.0", "--name", "m", "--method", "svd", "--rank", "4"],
                 ["merge", "old@1.0.0", "ok@1.0.0", "--name", "m"], ["resize", "old@1.0.0", "--rank", "2"]):
        code, _, err = cli(capsys, *args)
        assert code == 1 and f"{MOD_Q}: {why}" in err, (args, err)
    assert sorted(catalog_names()) == ["ok", "old"]


def test_every_malformed_module_is_named_in_one_line(tmp_path, capsys):
    sd = lora_sd()
    _lone_up(sd)
    sd[f"{MOD_K}.alpha"] = torch.ones(3)
    sd[f"{MOD_TE}.lora_down.weight"] = torch.zeros(0, 32)
    sd[f"{MOD_TE}.lora_up.weight"] = torch.zeros(32, 0)
    code, _, err = cli(capsys, "add", save(tmp_path / "three.safetensors", sd), "--name", "bad")
    assert code == 1 and "3 malformed LoRA module(s)" in err
    for name in (MOD_Q, MOD_K, MOD_TE):
        assert name in err


# --- NaN / Inf ----------------------------------------------------------------------------------
def _with(sd, key, index, value):
    sd[key][index] = value
    return sd


@pytest.fixture
def nonfinite_catalog(tmp_path, capsys):
    """ok, nan (NaN in MOD_Q's up), inf (+Inf in MOD_TE's down), nanalpha (MOD_K's alpha)."""
    files = {"ok": lora_sd(seed=1),
             "nan": _with(lora_sd(), f"{MOD_Q}.lora_up.weight", (0, 0), float("nan")),
             "inf": _with(lora_sd(), f"{MOD_TE}.lora_down.weight", (1, 1), float("inf")),
             "nanalpha": {**lora_sd(), f"{MOD_K}.alpha": torch.tensor(float("nan"))}}
    for name, sd in files.items():
        assert cli(capsys, "add", save(tmp_path / f"{name}.safetensors", sd), "--name", name)[0] == 0
    return {"nan": MOD_Q, "inf": MOD_TE, "nanalpha": MOD_K}


def test_nonfinite_inputs_are_refused_per_module(nonfinite_catalog, capsys):
    for ref, module in nonfinite_catalog.items():
        for args in (["merge", "ok@1.0.0", f"{ref}@1.0.0", "--name", "m"],
                     ["merge", "ok@1.0.0", f"{ref}@1.0.0", "--name", "m", "--method", "svd", "--rank", "4"],
                     ["merge", "ok@1.0.0", f"{ref}@1.0.0", "--name", "m", "--method", "ties", "--rank", "4"],
                     ["resize", f"{ref}@1.0.0", "--rank", "2", "--name", "r"]):
            code, _, err = cli(capsys, *args)
            assert code == 1 and f"{ref}@1.0.0: NaN or Inf in 1 module(s): {module}" in err, (args, err)
            assert "--allow-nonfinite" in err
    code, _, err = cli(capsys, "merge", "nan@1.0.0", "inf@1.0.0", "--name", "m")
    assert code == 1 and "nan@1.0.0" in err and MOD_Q in err  # the first input refused names its module
    assert "m" not in catalog_names() and "r" not in catalog_names()


def test_allow_nonfinite_keeps_them_and_says_so(nonfinite_catalog, capsys):
    from loradex.registry.catalog.store import Catalog

    code, out, err = cli(capsys, "merge", "ok@1.0.0", "nan@1.0.0", "--name", "kept", "--allow-nonfinite", "--json")
    assert code == 0, err
    report = json.loads(out)["report"]
    assert report["nonfinite"] == [f"nan@1.0.0: {MOD_Q}", f"result: {MOD_Q}"]
    stored = Catalog().resolve("kept@1.0.0").extra["recipe_report"]["nonfinite"]
    assert stored == report["nonfinite"]
    code, out, _ = cli(capsys, "merge", "ok@1.0.0", "inf@1.0.0", "--name", "kept2", "--allow-nonfinite")
    assert code == 0 and f"kept NaN/Inf (--allow-nonfinite) in inf@1.0.0: {MOD_TE}" in out
    # a decomposition cannot factor NaN: one line naming the module, never exit 3
    for args in (["merge", "ok@1.0.0", "nan@1.0.0", "--name", "s", "--method", "svd", "--rank", "4"],
                 ["resize", "nan@1.0.0", "--rank", "2", "--name", "s"]):
        code, _, err = cli(capsys, *args, "--allow-nonfinite")
        assert code == 1 and f"{MOD_Q}: the decomposition failed" in err, (args, err)


def test_bake_refuses_a_nonfinite_adapter(nonfinite_catalog, capsys, tmp_path):
    assert cli(capsys, "bake", "tiny-sd1", "ok@1.0.0", "-o", tmp_path / "ok")[0] == 0  # builds the tiny base
    code, _, err = cli(capsys, "bake", "tiny-sd1", "nan@1.0.0", "-o", tmp_path / "baked")
    assert code == 1 and f"nan@1.0.0: NaN or Inf in 1 module(s): {MOD_Q}" in err
    assert not (tmp_path / "baked").exists()


def test_fp16_overflow_in_the_result_is_refused(tmp_path, capsys):
    sd = lora_sd()
    sd[f"{MOD_K}.lora_up.weight"][0, 0] = 1e5  # finite in fp32, +Inf once the factors are written as fp16
    assert cli(capsys, "add", save(tmp_path / "big.safetensors", sd), "--name", "big")[0] == 0
    code, _, err = cli(capsys, "merge", "big@1.0.0", "big@1.0.0", "--name", "m")
    assert code == 1 and f"result: NaN or Inf in 1 module(s): {MOD_K}" in err and "--dtype fp32" in err
    assert cli(capsys, "merge", "big@1.0.0", "big@1.0.0", "--name", "m", "--dtype", "fp32")[0] == 0


# --- pickles ------------------------------------------------------------------------------------
def _u(text: str) -> bytes:
    """SHORT_BINUNICODE ``text``."""
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def _long1(n: int) -> bytes:
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


GIB8 = _long1(2**33)
HOSTILE_PICKLES = {
    # builtins.bytearray(2**33): protocol 2 GLOBAL (Python 2 module name), protocol 4 STACK_GLOBAL
    "bytearray_p2": (b"\x80\x02c__builtin__\nbytearray\n" + GIB8 + b"\x85R.", "builtins.bytearray(…) called"),
    "bytearray_p4": (b"\x80\x04" + _u("builtins") + _u("bytearray") + b"\x93" + GIB8 + b"\x85R.",
                     "builtins.bytearray(…) called"),
    # the size comes back from the memo, and the callable too
    "bytearray_memo": (b"\x80\x04" + _u("builtins") + _u("bytearray") + b"\x93\x94" + GIB8 + b"\x94N0h\x00h\x01\x85R.",
                       "builtins.bytearray(…) called"),
    "float_storage": (b"\x80\x02ctorch\nFloatStorage\n" + GIB8 + b"\x85R.", "torch.FloatStorage(…) called"),
    "tensor_of_size": (b"\x80\x02ctorch\nTensor\nctorch\nSize\n]" + GIB8 + b"a\x85R\x85R.", "torch.Tensor(…) called"),
    "newobj_storage": (b"\x80\x02ctorch.storage\nUntypedStorage\n" + GIB8 + b"\x85\x81.",
                       "torch.storage.UntypedStorage(…) called"),
    # names carrying junk are not the allowed global they resemble
    "newline_name": (b"\x80\x04" + _u("torch") + _u("FloatStorage\n") + b"\x93" + _u("x") + b"\x85R.",
                     "torch.FloatStorage\\x0a"),
    "newline_module": (b"\x80\x04" + _u("torch._utils\n") + _u("_rebuild_tensor_v2") + b"\x93)R.",
                       "torch._utils\\x0a._rebuild_tensor_v2"),
    "space_module": (b"\x80\x02ctorch x\nfloat16\n.", "<malformed GLOBAL 'torch x float16'>"),
    # one 64 KiB string copied by bytearray 4096 times through the memo: 256 MiB from 80 KiB
    "memo_amplification": (b"\x80\x04" + _u("builtins") + _u("bytearray") + b"\x93\x94"
                           + b"\x8d" + struct.pack("<Q", 65536) + b"a" * 65536 + b"\x94("
                           + b"h\x00h\x01\x85R" * 4096 + b"l.", "calls copying"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_PICKLES))
def test_hostile_pickles_are_refused_before_torch_sees_them(case, tmp_path, capsys):
    data, why = HOSTILE_PICKLES[case]
    path = tmp_path / f"{case}.pt"
    path.write_bytes(data)
    report = scan_pickle(path)  # asserted first: the loader below never runs on a file the scan passes
    assert not report.safe, report.to_dict()
    with pytest.raises(UnsafePickle) as info:
        safe_load_pickle(path)
    assert why in str(info.value) and "\n" not in str(info.value), str(info.value)
    code, _, err = cli(capsys, "add", path, "--name", "evil", "--allow-pickle")
    assert code == 1 and why in err
    assert catalog_names() == []


def test_legacy_storage_larger_than_the_file_is_refused(tmp_path):
    good = tmp_path / "legacy.pt"
    torch.save({"<tok>": torch.ones(7, 111)}, good, _use_new_zipfile_serialization=False)
    data = good.read_bytes()
    assert scan_pickle(good).safe and data.count(b"M\x09\x03") == 1  # BININT2 777: the storage's numel
    evil = tmp_path / "legacy_evil.pt"
    evil.write_bytes(data.replace(b"M\x09\x03", b"J\xff\xff\xff\x7f"))  # 2**31 - 1 elements: 8 GiB of floats
    report = scan_pickle(evil)
    assert not report.safe and report.disallowed == ()
    assert report.refused_calls == ("<a storage whose element count is not a number up to the file's size>",)


def test_ordinary_torch_files_still_scan_clean_and_load(tmp_path):
    state = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3, dtype=torch.float16),
             "p": torch.nn.Parameter(torch.ones(2)), "name": "x", "raw": bytearray(b"abc"), "blob": b"\x00\x01"}
    for new in (True, False):
        path = tmp_path / f"ok_{new}.pt"
        torch.save(state, path, _use_new_zipfile_serialization=new)
        report = scan_pickle(path)
        assert report.safe, report.to_dict()
        loaded = safe_load_pickle(path)
        assert torch.equal(loaded["a"], state["a"]) and loaded["raw"] == bytearray(b"abc") and loaded["blob"] == b"\x00\x01"


@pytest.mark.parametrize("case", ["lone_A", "alpha_vector", "rank0"])
def test_malformed_diffusers_modules_are_named_by_the_probe_and_the_merge_reader(case, tmp_path):
    from loradex.merge.conventions.adapter_io import open_adapter
    from loradex.registry.errors import UnsupportedFormat
    from loradex.registry.probe import probe_path

    q, k = ("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1." + p for p in ("to_q", "to_k"))
    sd = {f"{m}.lora_{ab}.weight": torch.randn(shape) for m in (q, k) for ab, shape in (("A", (4, 64)), ("B", (64, 4)))}
    if case == "lone_A":
        del sd[f"{q}.lora_B.weight"]
    elif case == "alpha_vector":
        sd[f"{q}.alpha"] = torch.ones(3)
    else:
        sd[f"{q}.lora_A.weight"], sd[f"{q}.lora_B.weight"] = torch.zeros(0, 64), torch.zeros(64, 0)
    path = save(tmp_path / f"{case}.safetensors", sd)
    for read in (probe_path, lambda p: open_adapter(p, base="sd1").load_all()):
        with pytest.raises(UnsupportedFormat, match="1 malformed LoRA module") as info:
            read(path)
        assert "to_q" in str(info.value) and "to_k" not in str(info.value)


def _loha(module: str, rank: int = 4) -> dict:
    return {f"{module}.hada_w1_a": torch.randn(64, rank), f"{module}.hada_w1_b": torch.randn(rank, 64),
            f"{module}.hada_w2_a": torch.randn(64, rank), f"{module}.hada_w2_b": torch.randn(rank, 64),
            f"{module}.alpha": torch.tensor(2.0)}


LYCORIS_CASES = {
    "alpha_vector": ({f"{MOD_Q}.alpha": torch.ones(2)}, (), "alpha has shape (2,), not one value"),
    "rank0": (_loha(MOD_Q, rank=0), (), "rank 0 or an empty factor"),
    "missing_factor": ({}, (f"{MOD_Q}.hada_w2_b",), "loha module without w2b"),
    "rank_mismatch": ({f"{MOD_Q}.hada_w2_b": torch.randn(3, 64)}, (), "loha factors w2a/w2b have different ranks"),
    "lokr_0dim": ({f"{MOD_Q}.lokr_w1_a": torch.tensor(1.0), f"{MOD_Q}.lokr_w1_b": torch.randn(4, 8),
                   f"{MOD_Q}.lokr_w2": torch.randn(8, 8)}, [f"{MOD_Q}.hada_{p}" for p in ("w1_a", "w1_b", "w2_a", "w2_b")],
                  "lokr factors with too few dimensions"),
}


@pytest.mark.parametrize("case", sorted(LYCORIS_CASES))
def test_malformed_lycoris_modules_are_named_by_the_probe_and_the_merge_reader(case, tmp_path):
    from safetensors.torch import save_file

    from loradex.merge.conventions.adapter_io import open_adapter
    from loradex.registry.errors import UnsupportedFormat
    from loradex.registry.probe import probe_path

    extra, dropped, why = LYCORIS_CASES[case]
    sd = {**_loha(MOD_Q), **_loha(MOD_K), **extra}
    for key in dropped:
        del sd[key]
    path = tmp_path / f"{case}.safetensors"
    save_file(sd, str(path), metadata={"ss_network_module": "lycoris.kohya"})
    for read in (probe_path, lambda p: open_adapter(p, base="sd1").load_all()):
        with pytest.raises(UnsupportedFormat) as info:
            read(path)
        assert f"{MOD_Q}: {why}" in str(info.value) and MOD_K not in str(info.value), str(info.value)


def test_lycoris_factors_that_do_not_fit_are_one_line_at_merge(tmp_path):
    from loradex.merge.conventions.adapter_io import module_from_group
    from loradex.registry.errors import UnsupportedFormat

    group = {"hada_w1_a": torch.randn(64, 4), "hada_w1_b": torch.randn(4, 64), "hada_w2_a": torch.randn(32, 4),
             "hada_w2_b": torch.randn(4, 64)}  # w1 is 64×64, w2 32×64: no Hadamard product
    with pytest.raises(UnsupportedFormat, match="do not fit together"):
        module_from_group(MOD_Q, group)
