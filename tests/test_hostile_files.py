"""Every corpus file truncated at every 1 KiB boundary, and the corpus's bad files, give a typed
one-line error from `inspect` and `add`, and the home stays verify-clean (issue 9, check 3)."""

from __future__ import annotations

import json
import os

import pytest

from loradex.registry.adding import add_file
from loradex.registry.catalog import Catalog
from loradex.registry.errors import LoradexError
from loradex.registry.maintenance import verify
from loradex.registry.probe import probe_path

# CI cuts every 8 KiB; the full campaign (bench/reliability_full.py) sets 1024.
STEP = int(os.environ.get("LORADEX_TRUNCATION_STEP", "8192"))
BAD = ["bad_lfs_pointer_learned_embeds.safetensors", "bad_invokeai_fakeTensor_json_kohya_sd15_shinkai.safetensors"]


def _truncations(data: bytes, step: int = STEP):
    yield 0
    yield from range(1, 9)
    yield from range(step, len(data), step)
    yield len(data) - 1


def test_every_truncation_of_every_safetensors_file_is_a_typed_error(corpus_dir, tmp_path):
    checked = 0
    for src in sorted((corpus_dir / "files").glob("*.safetensors")):
        if src.name in BAD:
            continue
        data = src.read_bytes()
        target = tmp_path / src.name
        for cut in _truncations(data):
            target.write_bytes(data[:cut])
            with pytest.raises(LoradexError) as info:
                probe_path(target)
            message = str(info.value)
            assert "\n" not in message and src.name in message, message
            checked += 1
    assert checked > (18 << 20) // STEP  # the corpus holds ~18 MB of safetensors


def test_bad_files_and_truncations_leave_the_home_clean(corpus_dir, tmp_path):
    catalog = Catalog()
    candidates = [corpus_dir / "files" / name for name in BAD]
    for src in sorted((corpus_dir / "files").glob("*.safetensors"))[:4]:
        data = src.read_bytes()
        for cut in (7, len(data) // 2, len(data) - 1):
            path = tmp_path / f"{cut}-{src.name}"
            path.write_bytes(data[:cut])
            candidates.append(path)
    for path in candidates:
        with pytest.raises(LoradexError):
            add_file(catalog, path, name="hostile")
    assert catalog.list_adapters() == []
    report = verify(catalog)
    assert report.ok and report.checked_blobs == 0


def test_cli_one_line_for_bad_corpus_files(corpus_dir, loradex_home):
    from test_catalog import run_loradex

    for name in BAD:
        for cmd in (["inspect"], ["add", "--name", "bad"]):
            args = [cmd[0], str(corpus_dir / "files" / name), *cmd[1:]]
            proc = run_loradex(*args, home=loradex_home)
            assert proc.returncode == 1, proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert json.loads(run_loradex("verify", "--json", home=loradex_home).stdout)["ok"] is True
