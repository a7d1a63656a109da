"""Contact sheets: a labelled grid of images (rows = prompts/seeds, columns = versions).

``grid_image(cells, row_labels, col_labels)`` is pure layout with pillow; ``version_gallery``
renders the same prompt/seed records for each version through ``trainer.generate`` and lays them
out; ``records_gallery`` lays out stored records (one version's samples). The sheet's PNG carries
its layout under the ``loradex-gallery`` text chunk (labels, the record id of every cell).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

LABEL_PAD = 4
MIN_CELL = 128  # tiny 32 px renders are upscaled (nearest) so the sheet is readable
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
MISSING = (200, 200, 200)


@dataclass
class GallerySheet:
    image: object  # PIL.Image
    row_labels: list[str]
    col_labels: list[str]
    record_ids: list[list[str | None]] = field(default_factory=list)
    cell_size: int = 0
    header_height: int = 0
    row_label_width: int = 0

    def layout(self) -> dict:
        return {"rows": self.row_labels, "columns": self.col_labels, "records": self.record_ids,
                "size": list(self.image.size), "cell_size": self.cell_size,
                "header_height": self.header_height, "row_label_width": self.row_label_width}

    def save(self, dest) -> Path:
        from PIL.PngImagePlugin import PngInfo

        from loradex.registry.files.atomic_files import atomic_output

        info = PngInfo()
        info.add_itxt("loradex-gallery", json.dumps(self.layout(), sort_keys=True))
        dest = Path(dest)
        with atomic_output(dest) as fh:
            self.image.save(fh, format="PNG", pnginfo=info)
        return dest


def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def _text_size(draw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _wrap(draw, text: str, font, width: int) -> list[str]:
    """Greedy word wrap; words longer than the width are cut by characters."""
    lines, current = [], ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if _text_size(draw, candidate, font)[0] <= width or not current:
            current = candidate
            while _text_size(draw, current, font)[0] > width and len(current) > 1:
                cut = len(current) - 1
                while cut > 1 and _text_size(draw, current[:cut], font)[0] > width:
                    cut -= 1
                lines.append(current[:cut])
                current = current[cut:]
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines or [""]


def grid_geometry(n_rows: int, n_cols: int, cell: tuple[int, int], row_label_width: int,
                  header_height: int) -> tuple[int, int]:
    """Sheet size: a label column, a header row, then the cells with LABEL_PAD gutters."""
    w, h = cell
    return (row_label_width + n_cols * (w + LABEL_PAD) + LABEL_PAD,
            header_height + n_rows * (h + LABEL_PAD) + LABEL_PAD)


def grid_image(cells: list[list[object | None]], row_labels: list[str], col_labels: list[str], *,
               cell_size: int | None = None, row_label_width: int = 160) -> GallerySheet:
    """Lay out ``cells[row][col]`` (PIL images or None for a missing one) under ``col_labels``
    with ``row_labels`` on the left. Cells are resized (nearest) to a square ``cell_size``."""
    from PIL import Image, ImageDraw

    if len(cells) != len(row_labels) or any(len(r) != len(col_labels) for r in cells):
        raise ValueError("cells must be len(row_labels) rows of len(col_labels) images")
    present = [im for row in cells for im in row if im is not None]
    side = cell_size or max([MIN_CELL] + [max(im.size) for im in present])
    font = _font()
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = _text_size(scratch, "Ag", font)[1] + 2
    header_lines = [_wrap(scratch, label, font, side) for label in col_labels]
    header_height = LABEL_PAD + line_h * max([1] + [len(ls) for ls in header_lines]) + LABEL_PAD
    size = grid_geometry(len(row_labels), len(col_labels), (side, side), row_label_width, header_height)
    sheet = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for c, lines in enumerate(header_lines):
        x = row_label_width + LABEL_PAD + c * (side + LABEL_PAD)
        for i, line in enumerate(lines):
            draw.text((x, LABEL_PAD + i * line_h), line, fill=INK, font=font)
    for r, label in enumerate(row_labels):
        y = header_height + r * (side + LABEL_PAD)
        for i, line in enumerate(_wrap(scratch, label, font, row_label_width - 2 * LABEL_PAD)[: side // line_h]):
            draw.text((LABEL_PAD, y + i * line_h), line, fill=INK, font=font)
        for c, im in enumerate(cells[r]):
            x = row_label_width + LABEL_PAD + c * (side + LABEL_PAD)
            if im is None:
                draw.rectangle([x, y, x + side - 1, y + side - 1], fill=MISSING)
                draw.text((x + LABEL_PAD, y + LABEL_PAD), "missing", fill=INK, font=font)
            else:
                sheet.paste(im.convert("RGB").resize((side, side), Image.Resampling.NEAREST), (x, y))
    return GallerySheet(sheet, list(row_labels), list(col_labels), cell_size=side,
                        header_height=header_height, row_label_width=row_label_width)


def version_gallery(catalog, refs: list[str], prompts: list[str], *, base: str, seeds: list[int],
                    steps: int | None = None, cfg: float | None = None, width: int = 512, height: int = 512,
                    weight: float = 1.0, negative: str = "", scheduler: str | None = None,
                    cell_size: int | None = None, progress=None) -> GallerySheet:
    """Render every (prompt, seed) once per version, each version stacked alone at ``weight``
    (the same records for each column), and lay them out side by side. ``steps``/``cfg`` None:
    the base family's defaults."""
    from loradex.trainer.generate import GenerateSettings, Generator

    versions = [catalog.resolve(ref) for ref in refs]
    generator = Generator(catalog, base)
    rows = [(p, s) for p in prompts for s in seeds]
    cells: list[list[object]] = [[None] * len(versions) for _ in rows]
    ids: list[list[str | None]] = [[None] * len(versions) for _ in rows]
    total, done = len(rows) * len(versions), 0
    for c, version in enumerate(versions):
        for r, (prompt, seed) in enumerate(rows):
            tagged = f"{prompt} <lora:{version.ref}:{weight}>"
            result = generator.generate(tagged, GenerateSettings(
                negative=negative, seed=seed, steps=steps, cfg=cfg, width=width, height=height,
                scheduler=scheduler), source="eval")
            cells[r][c], ids[r][c] = result.image, result.record.id
            done += 1
            if progress:
                progress(done, total, version.ref)
    sheet = grid_image(cells, [f"{p} · seed {s}" for p, s in rows], [v.ref for v in versions],
                       cell_size=cell_size)
    sheet.record_ids = ids
    return sheet


def records_gallery(catalog, records, *, cell_size: int | None = None) -> GallerySheet:
    """Stored records (e.g. one version's samples): rows = prompts, columns = seeds."""
    import io

    from PIL import Image

    from loradex.registry.errors import NotFound
    from loradex.registry.catalog.records import record_png_bytes

    records = [r for r in records if r.image_blob]
    if not records:
        raise NotFound("no prompt records with images to show", hint="generate or eval first")
    oldest_first = sorted(records, key=lambda r: (r.created_at, r.id))
    prompts = list(dict.fromkeys(r.record["clean_prompt"] for r in oldest_first))
    seeds = sorted(dict.fromkeys(r.record["seed"] for r in oldest_first), key=lambda s: (s is None, s or 0))
    records = sorted(records, key=lambda r: (r.created_at, r.id), reverse=True)
    cells = [[None] * len(seeds) for _ in prompts]
    ids: list[list[str | None]] = [[None] * len(seeds) for _ in prompts]
    for rec in records:
        r, c = prompts.index(rec.record["clean_prompt"]), seeds.index(rec.record["seed"])
        if cells[r][c] is None:  # records come newest first: keep the newest
            cells[r][c] = Image.open(io.BytesIO(record_png_bytes(catalog, rec))).convert("RGB")
            ids[r][c] = rec.id
    sheet = grid_image(cells, prompts, [f"seed {s}" for s in seeds], cell_size=cell_size)
    sheet.record_ids = ids
    return sheet
