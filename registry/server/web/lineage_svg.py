"""The adapter page's lineage graph, drawn on the server as SVG: parents in the left column, the
adapter's own versions in the middle, children on the right; an arrow per edge (parent → child)
labelled with its relation (merged_from, trained_from, pulled_from…). Catalog versions link to
their version page, catalog dataset versions (``dataset:NAME@X.Y.Z``) to their dataset page;
external parents (hf://…, civitai:…) are plain text, never links.

Every text and attribute is escaped here (the SVG is inserted into the page as markup), after
``common.visible_controls`` has written out bidirectional controls.
"""

from __future__ import annotations

from html import escape

from .common import url_part, visible_controls

NODE_W, NODE_H, COL_GAP, ROW_GAP, PAD = 240, 30, 120, 14, 16
MAX_LABEL = 34


def _text(value: str) -> str:
    value = visible_controls(str(value))
    if len(value) > MAX_LABEL:
        value = value[:MAX_LABEL - 1] + "…"
    return escape(value, quote=True)


def _columns(nodes: dict, edges: list) -> dict[str, int]:
    """Column of each node: 1 for the adapter's versions, 0 for their parents, 2 for children."""
    column = {label: 1 for label, info in nodes.items() if info.get("role") == "self"}
    for parent, child, _relation in edges:
        if child in column and column[child] == 1 and parent not in column:
            column[parent] = 0
    for parent, child, _relation in edges:
        if parent in column and column[parent] == 1 and child not in column:
            column[child] = 2
    for label in nodes:
        column.setdefault(label, 0)
    return column


def lineage_svg(lineage: dict) -> str:
    """SVG markup for ``catalog_queries._lineage``'s result; "" when there are no edges."""
    nodes, edges = lineage.get("nodes") or {}, lineage.get("edges") or []
    if not edges:
        return ""
    column = _columns(nodes, edges)
    order: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for label in nodes:
        order[column[label]].append(label)
    for labels in order.values():
        labels.sort()
    used = [c for c in (0, 1, 2) if order[c]]
    x_of = {c: PAD + i * (NODE_W + COL_GAP) for i, c in enumerate(used)}
    pos = {}
    for c in used:
        for row, label in enumerate(order[c]):
            pos[label] = (x_of[c], PAD + row * (NODE_H + ROW_GAP))
    width = PAD * 2 + len(used) * NODE_W + (len(used) - 1) * COL_GAP
    height = PAD * 2 + max(len(order[c]) for c in used) * (NODE_H + ROW_GAP) - ROW_GAP
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" id="lineage-svg" role="img" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" aria-label="lineage graph">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#8a93a6"/></marker></defs>']
    for parent, child, relation in edges:
        (px, py), (cx, cy) = pos[parent], pos[child]
        if px < cx:
            x1, x2 = px + NODE_W, cx
        elif px > cx:
            x1, x2 = px, cx + NODE_W
        else:  # same column: route around the right side
            x1 = x2 = px + NODE_W
        y1, y2 = py + NODE_H / 2, cy + NODE_H / 2
        bend = (x1 + x2) / 2 if x1 != x2 else x1 + 40
        out.append(f'<path class="edge" d="M {x1} {y1} C {bend} {y1}, {bend} {y2}, {x2} {y2}"/>')
        out.append(f'<text class="relation" x="{bend}" y="{(y1 + y2) / 2 - 4}" text-anchor="middle">'
                   f'{_text(relation)}</text>')
    for label, (x, y) in pos.items():
        info = nodes[label]
        role = info.get("role") or "other"
        box = (f'<g class="node {escape(role)}"><title>{escape(visible_controls(label))}</title>'
               f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
               f'<text x="{x + 10}" y="{y + NODE_H / 2 + 4}">{_text(label)}</text></g>')
        href = _version_href(label.removeprefix("dataset:"), "datasets" if role == "dataset" else "versions") \
            if info.get("href") else None
        out.append(f'<a href="{href}">{box}</a>' if href else box)
    out.append("</svg>")
    return "\n".join(out)


def _version_href(label: str, page: str = "versions") -> str | None:
    """``NAME@VERSION`` → ``/ui/versions/NAME/VERSION`` (``page`` "datasets": a dataset version's)."""
    name, sep, version = label.rpartition("@")
    if not sep:
        return None
    return escape(f"/ui/{page}/{url_part(name)}/{url_part(version)}", quote=True)
