"""`import` of a generated 1,000-file webui tree, twice (issue 3, acceptance check 4).

Targets: the second run (unchanged tree) ≤ 2 s and 0 bytes re-read. The tree: tiny random kohya
LoRAs (rank 1) in models/Lora/<folder>/ and A1111 embeddings in embeddings/, every 10th file with
.civitai.info + .json + .preview.png sidecars, and 1 % duplicates. Reported: first-run time,
second-run time in-process and as a `loradex import` subprocess (interpreter start included),
bytes hashed and files opened under the tree on the second run (counted by wrapping ``open``),
and a third run after 10 files were touched.

    python bench/bench_import.py [--files 1000] [--keep]
"""

from __future__ import annotations

import argparse
import builtins
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_tree(root: Path, n: int) -> None:
    from PIL import Image

    from loradex.merge.synthetic_adapters import TINY_SD1_MODULES, write_random_embedding, write_random_kohya_lora

    modules = dict(sorted(TINY_SD1_MODULES.items())[:8])  # small files: the bench measures bookkeeping
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 120, 200)).save(png, format="PNG")
    n_emb = n // 4
    for i in range(n):
        if i < n_emb:
            path = root / "embeddings" / f"emb_{i:04d}.safetensors"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_random_embedding(path, n_vectors=1, dim=16, seed=i)
        else:
            path = root / "models" / "Lora" / f"folder_{i % 20:02d}" / f"lora_{i:04d}.safetensors"
            path.parent.mkdir(parents=True, exist_ok=True)
            if i % 100 == 99:  # a duplicate of the previous file
                shutil.copyfile(prev, path)
            else:
                write_random_kohya_lora(path, modules=modules, rank=1, seed=i, trigger=f"tok{i}")
            prev = path
        if i % 10 == 0:
            stem = path.with_name(path.name[: -len(".safetensors")])
            stem.with_name(stem.name + ".civitai.info").write_text(json.dumps(
                {"id": 10_000 + i, "modelId": i, "name": "v1", "baseModel": "SD 1.5",
                 "trainedWords": [f"tok{i}"], "model": {"name": f"Model {i}", "type": "LORA"}}))
            stem.with_name(stem.name + ".json").write_text(json.dumps(
                {"activation text": f"tok{i}", "preferred weight": 0.8, "sd version": "SD1"}))
            stem.with_name(stem.name + ".preview.png").write_bytes(png.getvalue())


class OpenCounter:
    def __init__(self, root: Path):
        self.root, self.count = str(root), 0
        self._real = io.open

    def __enter__(self):
        def counting(file, *a, **k):
            if isinstance(file, (str, os.PathLike)) and os.fspath(file).startswith(self.root):
                self.count += 1
            return self._real(file, *a, **k)

        builtins.open = io.open = counting
        return self

    def __exit__(self, *exc):
        builtins.open = io.open = self._real


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="loradex-bench-import-"))
    tree, home = work / "webui", work / "home"
    from loradex.registry.catalog.store import Catalog
    from loradex.registry.folders.webui_import import import_tree

    t = time.perf_counter()
    make_tree(tree, args.files)
    gen_s = time.perf_counter() - t
    catalog = Catalog(home)

    first = import_tree(catalog, tree)
    with OpenCounter(tree) as opened:
        t = time.perf_counter()
        second = import_tree(catalog, tree)
        second_s = time.perf_counter() - t

    exe = Path(sys.executable).with_name("loradex")
    t = time.perf_counter()
    proc = subprocess.run([str(exe), "import", str(tree), "--json"], capture_output=True, text=True,
                          env={**os.environ, "LORADEX_HOME": str(home)})
    cli_s = time.perf_counter() - t
    cli = json.loads(proc.stdout)

    touched = sorted(tree.rglob("lora_*.safetensors"))[:10]
    for path in touched:
        os.utime(path)  # new mtime, same bytes: re-hashed, then found to be duplicates of themselves
    third = import_tree(catalog, tree)

    result = {
        "files": args.files, "generate_s": round(gen_s, 2),
        "first_run_s": first.stats.seconds, "first_counts": first.counts(),
        "first_bytes_hashed": first.stats.bytes_hashed,
        "second_run_s": round(second_s, 3), "second_counts": second.counts(),
        "second_bytes_hashed": second.stats.bytes_hashed, "second_files_opened_under_tree": opened.count,
        "second_run_cli_s": round(cli_s, 3), "cli_counts": cli["counts"],
        "cli_bytes_hashed": cli["stats"]["bytes_hashed"],
        "third_run_after_touching_10_s": third.stats.seconds, "third_counts": third.counts(),
        "third_files_read": third.stats.files_read,
        "targets": {"second_run_le_2s": second_s <= 2.0 and cli_s <= 2.0,
                    "zero_bytes_reread": second.stats.bytes_hashed == 0 and opened.count == 0},
    }
    print(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
