"""Every corpus file truncated at every 1 KiB boundary, and the corpus's bad files, give a typed
one-line error from `inspect` and `add`, and the home stays verify-clean (issue 9, check 3).

In-process (``probe_path``, what both commands run first): every corpus file — safetensors,
pickles (.pt/.bin, with the pickle opt-in so the scanner and loader see the damage) and the JSON
side file — cut at every 1 KiB boundary, at 1-8 bytes and one byte short, by truncating one copy
downwards. Through the CLI entry point (``loradex.cli.main.main``, in-process: the same argument
parsing and error-to-one-line path as the console script, without a process start per call): a
sample of cuts of every corpus file, `inspect` and `add`. The bad files also go through the real
console script in subprocesses.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from _reliability import leftover_temp_files
from conftest import CORPUS
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import LoradexError
from loradex.registry.catalog.maintenance import verify
from loradex.registry.probe import probe_path

STEP = int(os.environ.get("LORADEX_TRUNCATION_STEP", "1024"))
BAD = ["bad_lfs_pointer_learned_embeds.safetensors", "bad_invokeai_fakeTensor_json_kohya_sd15_shinkai.safetensors"]
CORPUS_FILES = sorted(p.name for p in (CORPUS / "files").glob("*")) if (CORPUS / "files").is_dir() else []


def _every_cut(size: int, step: int = STEP) -> list[int]:
    """Every ``step`` boundary, the first 8 bytes and one byte short, largest first."""
    return sorted({*range(0, size, step), *range(1, 9), size - 1} - {size}, reverse=True)


def _sample_cuts(data: bytes) -> list[int]:
    """Empty, inside the length prefix, just before and at the end of a safetensors header (when
    the prefix is one), a third, half, one byte short."""
    header_end = 8 + int.from_bytes(data[:8].ljust(8, b"\0"), "little")
    cuts = {0, 7, len(data) // 3, len(data) // 2, len(data) - 1}
    if header_end < len(data):
        cuts |= {header_end - 1, header_end}
    return sorted(c for c in cuts if 0 <= c < len(data))


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_every_truncation_of_a_corpus_file_is_a_typed_one_line_error(name, corpus_dir, tmp_path):
    src = corpus_dir / "files" / name
    target = tmp_path / name
    shutil.copyfile(src, target)
    os.chmod(target, 0o644)
    cuts = _every_cut(src.stat().st_size)
    for cut in cuts:
        os.truncate(target, cut)
        with pytest.raises(LoradexError) as info:
            probe_path(target, allow_pickle=True)
        message = str(info.value)
        assert "\n" not in message and name in message, (cut, message)
    assert len(cuts) >= src.stat().st_size // STEP


def test_cli_inspect_and_add_refuse_truncated_corpus_files_in_one_line(corpus_dir, tmp_path, capsys):
    from loradex.cli.main import main

    calls = 0
    for name in CORPUS_FILES:
        data = (corpus_dir / "files" / name).read_bytes()
        for cut in _sample_cuts(data):
            path = tmp_path / f"cut{cut}-{name}"
            path.write_bytes(data[:cut])
            for args in (["inspect", str(path), "--allow-pickle"],
                         ["add", str(path), "--name", "hostile", "--allow-pickle"]):
                with pytest.raises(SystemExit) as exit_:
                    main(args)
                err = capsys.readouterr().err
                assert exit_.value.code == 1, (args, err)
                assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, (args, err)
                assert path.name in err and "Traceback" not in err, (args, err)
                calls += 1
    assert calls >= 2 * 5 * len(CORPUS_FILES)
    catalog = Catalog()
    assert catalog.list_adapters() == []
    report = verify(catalog)
    assert report.ok and report.checked_blobs == 0 and report.unreferenced == [], report.to_dict()
    assert leftover_temp_files(catalog.home) == []


def test_cli_one_line_for_bad_corpus_files(corpus_dir, loradex_home):
    from test_catalog import run_loradex

    for name in BAD:
        for cmd in (["inspect"], ["add", "--name", "bad"]):
            args = [cmd[0], str(corpus_dir / "files" / name), *cmd[1:]]
            proc = run_loradex(*args, home=loradex_home)
            assert proc.returncode == 1, proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert json.loads(run_loradex("verify", "--json", home=loradex_home).stdout)["ok"] is True
