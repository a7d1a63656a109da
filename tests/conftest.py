"""Shared fixtures: every test runs against its own empty loradex home."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


@pytest.fixture(autouse=True)
def loradex_home(tmp_path_factory, monkeypatch) -> Path:
    home = tmp_path_factory.mktemp("loradex-home")
    monkeypatch.setenv("LORADEX_HOME", str(home))
    monkeypatch.delenv("LORADEX_DB", raising=False)
    monkeypatch.delenv("LORADEX_BLOBS", raising=False)  # the home's own blobs/ unless a test opts in (tests/_s3.py)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    return home


@pytest.fixture
def corpus_dir() -> Path:
    if not (CORPUS / "files").is_dir():
        pytest.skip(f"corpus not found at {CORPUS}/files (a user's clone has no ../shared)")
    return CORPUS


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database at 127.0.0.1:5432 (skips where there is none)."""
    from _postgres import fresh_pg_database

    url, drop = fresh_pg_database()
    try:
        yield url
    finally:
        drop()


@pytest.fixture(scope="module")
def one_torch_thread():
    """The tiny models run far faster on one thread, above all on a shared, loaded machine.
    Modules that train or render opt in with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass
class CliRun:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def cli_main(capsys):
    """The CLI as a user runs it, through ``main`` (errors become one line, exit 1/2), in this
    process; never exit 3 and never a traceback."""
    from loradex.cli.main import main

    def run(*args) -> CliRun:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in args])
        captured = capsys.readouterr()
        result = CliRun(exit_info.value.code or 0, captured.out, captured.err)
        assert result.exit_code != 3 and "Traceback" not in result.output, result.output
        return result

    return run
