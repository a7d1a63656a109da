"""docs/FORMATS.md lists every registered family with what works for it (the generated table)."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_formats_page_holds_the_generated_families_table():
    table = runpy.run_path(str(ROOT / "docs" / "families_table.py"))["table"]()
    text = (ROOT / "docs" / "FORMATS.md").read_text()
    begin = text.index("<!-- FAMILIES:BEGIN")
    body = text[text.index("\n", begin) + 1:text.index("<!-- FAMILIES:END -->")].strip()
    assert body == table, "docs/FORMATS.md is stale: run `.venv/bin/python docs/families_table.py` and paste the table"


def test_every_family_is_named_on_the_formats_page():
    from loradex.families import all_families

    text = (ROOT / "docs" / "FORMATS.md").read_text()
    missing = [f.name for f in all_families() if f"`{f.name}`" not in text]
    assert not missing, f"docs/FORMATS.md does not name {missing}"
