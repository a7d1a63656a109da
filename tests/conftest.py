"""Shared fixtures: every test runs against its own empty loradex home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


@pytest.fixture(autouse=True)
def loradex_home(tmp_path_factory, monkeypatch) -> Path:
    home = tmp_path_factory.mktemp("loradex-home")
    monkeypatch.setenv("LORADEX_HOME", str(home))
    monkeypatch.delenv("LORADEX_DB", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    return home


@pytest.fixture
def corpus_dir() -> Path:
    if not (CORPUS / "files").is_dir():
        pytest.skip(f"corpus not found at {CORPUS}/files (a user's clone has no ../shared)")
    return CORPUS
