"""Pickles: static scan of imported globals, refusal, and weights_only loading. Malicious payloads never run."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from _formats_fixtures import CORPUS_FILES, corpus_available

from loradex.registry.errors import UnsafePickle
from loradex.registry.files.pickle_scan import UNRESOLVED, is_allowed, safe_load_pickle, scan_pickle
from loradex.registry.probe import probe_path

SYSTEM = f"{os.system.__module__}.system"  # posix.system on Linux


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious_files(tmp_path, marker):
    files = {}
    for proto in (0, 2, 4, 5):
        p = tmp_path / f"evil_p{proto}.pkl"
        p.write_bytes(pickle.dumps({"w": Payload(marker)}, protocol=proto))
        files[p] = SYSTEM
    zipped = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": Payload(marker)}, zipped)
    files[zipped] = SYSTEM
    legacy = tmp_path / "evil_legacy.ckpt"
    torch.save({"x": Payload(marker)}, legacy, _use_new_zipfile_serialization=False)
    files[legacy] = SYSTEM
    # STACK_GLOBAL whose module/name come back from the memo after the stack was popped
    code = f"open({str(marker)!r}, 'w').close()".encode()
    memo_trick = (b"\x80\x04" + b"\x8c\x08builtins\x94" + b"\x8c\x04exec\x94" + b"00" + b"h\x00h\x01\x93"
                  + b"\x8c" + bytes([len(code)]) + code + b"\x94\x85R.")
    p = tmp_path / "evil_memo.bin"
    p.write_bytes(memo_trick)
    files[p] = "builtins.exec"
    return files


def test_malicious_pickles_never_run(tmp_path):
    marker = tmp_path / "pwned"
    files = _malicious_files(tmp_path, marker)
    for path, global_name in files.items():
        report = scan_pickle(path)
        assert global_name in report.disallowed, path.name
        with pytest.raises(UnsafePickle) as exc:
            safe_load_pickle(path)
        assert global_name in str(exc.value)
        for allow in (False, True):
            with pytest.raises(UnsafePickle):
                probe_path(path, allow_pickle=allow)
        assert not marker.exists(), path.name
    # the memo trick really is live: only a plain unpickler would run it (we don't)
    assert scan_pickle(tmp_path / "evil_memo.bin").globals == ("builtins.exec",)


def test_unresolvable_stack_global_fails_closed(tmp_path):
    # module and name strings are on the stack but come from DUP, not from string pushes
    data = b"\x80\x04" + b"\x8c\x02os" + b"2" + b"\x93" + b"."
    p = tmp_path / "odd.pkl"
    p.write_bytes(data)
    assert scan_pickle(p).disallowed == (UNRESOLVED,)


def test_allow_list_mirrors_torch():
    for name in ("torch._utils._rebuild_tensor_v2", "torch.FloatStorage", "torch.BFloat16Storage",
                 "collections.OrderedDict", "torch.Size", "torch.float16", "torch.bfloat16",
                 "torch.nn.parameter.Parameter", "torch.device", "torch.cuda.HalfStorage", "_codecs.encode"):
        assert is_allowed(name), name
    for name in ("posix.system", "builtins.exec", "builtins.eval", "torch.nn.modules.container.ParameterDict",
                 "torch.load", "os.system", "subprocess.Popen", "builtins.getattr", "torch._C._foo"):
        assert not is_allowed(name), name
    from torch import _weights_only_unpickler as w

    assert all(is_allowed(n) for n in w._get_allowed_globals())


def test_legacy_torch_file_and_cuda_map_location(tmp_path):
    p = tmp_path / "legacy.pt"
    torch.save({"<tok>": torch.ones(768)}, p, _use_new_zipfile_serialization=False)
    report = scan_pickle(p)
    assert report.container == "torch-legacy" and report.safe
    r = probe_path(p, allow_pickle=True)
    assert (r.format, r.container, r.tokens, r.base) == ("diffusers-embedding", "torch-legacy", ("<tok>",), "sd1")


def test_parameter_dict_needs_explicit_opt_in(tmp_path):
    p = tmp_path / "old_a1111.pt"
    torch.save({"string_to_token": {"*": 265}, "name": "old",
                "string_to_param": torch.nn.ParameterDict({"*": torch.nn.Parameter(torch.zeros(3, 768))})}, p)
    pd = "torch.nn.modules.container.ParameterDict"
    assert scan_pickle(p).disallowed == (pd,)
    with pytest.raises(UnsafePickle, match="ParameterDict"):
        probe_path(p, allow_pickle=True)
    r = probe_path(p, allow_pickle=True, extra_allowed=[pd])
    assert (r.format, r.n_vectors, r.base) == ("a1111-embedding-pt", 3, "sd1")


@pytest.mark.skipif(not corpus_available(), reason="../shared/corpus/files absent (a user's clone)")
def test_corpus_pickles_scan_clean_and_load_on_cpu():
    for name in ("cloneofsimo_lora_kiriko2.ti.pt", "ti_a1111_bad-hands-5_mayaru.pt",
                 "ti_diffusers_learned_embeds_fastai_oldzip.bin"):
        report = scan_pickle(CORPUS_FILES / name)
        assert report.safe and report.members == ("archive/data.pkl",)
        assert "torch._utils._rebuild_tensor_v2" in report.globals
    obj = safe_load_pickle(CORPUS_FILES / "ti_a1111_bad-hands-5_mayaru.pt")  # saved on cuda:0
    t = obj["string_to_param"]["*"]
    assert t.device.type == "cpu" and tuple(t.shape) == (2, 768)
