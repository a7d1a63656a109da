"""Print the families table of docs/FORMATS.md from the families registry.

    .venv/bin/python docs/families_table.py      # the table between the FAMILIES markers

tests/test_docs_families.py checks that docs/FORMATS.md holds exactly this output, so the page
cannot drift from what loradex registers.
"""

from __future__ import annotations

from loradex.families import END_TO_END, RECOGNISED, all_families

OPERATIONS = ("convert", "merge", "resize", "extract", "stack", "render", "train", "bake")


def _vocabulary(family):
    module = family.aspect("vocabulary")
    for vocabulary in getattr(module, "VOCABULARIES", ()):
        if vocabulary.family == family.name:
            return vocabulary
    return None


def _works(family) -> str:
    if family.operations >= END_TO_END:
        return "everything (probe, catalog, search, push/pull, convert, merge, resize, extract, stack/render, train, bake)"
    extra = [op for op in OPERATIONS if op in family.operations]
    return "probe, catalog, search, push/pull" + (", " + ", ".join(extra) if extra else "")


def table() -> str:
    rows = ["| family | model | Civitai `baseModel` | variants (sub-families) | what works |",
            "|---|---|---|---|---|"]
    for family in all_families():
        vocabulary = _vocabulary(family)
        civitai = ", ".join(vocabulary.civitai[:3]) if vocabulary and vocabulary.civitai else "—"
        variants = ", ".join(f"`{v.name}`" for v in vocabulary.variants) if vocabulary and vocabulary.variants else "—"
        title = family.title + (f" (same layout as `{family.parent}`)" if family.parent else "")
        rows.append(f"| `{family.name}` | {title} | {civitai} | {variants} | {_works(family)} |")
    assert RECOGNISED <= END_TO_END
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
