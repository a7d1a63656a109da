"""Server memory while a default ``huggingface_hub`` (>= 1.20, hf_xet installed) uploads one big file
inline in its commit body (issue 17): peak RSS growth of the ``loradex serve`` Hub app, as a
ratio of the file's size (the reference), with the streamed commit parser (``commit_stream``,
default 8 MiB in-memory line) and, as a second reference in the same run, the same server told to
read every line whole (``line_in_memory_bytes`` above the line: what the server did before).

    python bench/hub_inline_upload.py [--size-mib 200]

Each configuration runs in its own server process (uvicorn on 127.0.0.1): one small warm-up
commit, then the peak RSS is reset (``/proc/PID/clear_refs`` 5) and the big file is uploaded with
``HfApi.upload_file``; growth = VmHWM after − VmRSS before. The client runs in this process, so
its own copy of the base64 body is not counted. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-inline-token"

SERVER = r"""
import sys, uvicorn
from loradex.registry.server.hub import create_app
root, port, line = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
app = create_app(root, token=%r, line_in_memory_bytes=line)
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
""" % TOKEN


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, value = line.split(":", 1)
            out[name] = int(value.split()[0]) * 1024
    return out


def run(size: int, line_in_memory: int, work: Path, label: str) -> dict:
    from huggingface_hub import HfApi, constants

    assert not constants.HF_HUB_DISABLE_XET, "run without HF_HUB_DISABLE_XET: the default client is the point"
    port = _free_port()
    home = work / label
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(home), str(port), str(line_in_memory)],
                              cwd=ROOT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        api = HfApi(endpoint=url, token=TOKEN)
        for _ in range(200):
            try:
                api.create_repo("bench/inline")
                break
            except Exception:
                time.sleep(0.1)
        api.upload_file(path_or_fileobj=os.urandom(1 << 20), path_in_repo="warm.bin", repo_id="bench/inline")
        data_path = work / "big.safetensors"
        Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # reset the peak
        before = _status(server.pid)["VmRSS"]
        start = time.perf_counter()
        api.upload_file(path_or_fileobj=str(data_path), path_in_repo="big.safetensors", repo_id="bench/inline")
        seconds = time.perf_counter() - start
        peak = _status(server.pid)["VmHWM"]
        entry = next(iter(api.get_paths_info("bench/inline", ["big.safetensors"])))
        assert entry.lfs is not None and entry.lfs.sha256 == hashlib.sha256(data_path.read_bytes()).hexdigest()
        return {"label": label, "growth": peak - before, "before": before, "seconds": seconds}
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=200)
    args = parser.parse_args()
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="bench-inline-") as tmp:
        work = Path(tmp)
        with open(work / "big.safetensors", "wb") as fh:
            for _ in range(args.size_mib):
                fh.write(os.urandom(1 << 20))
        rows = [run(size, 8 << 20, work, "streamed (default: lines over 8 MiB parsed as a stream)"),
                run(size, 4 << 30, work, "reference: every line read whole (the server before)")]
    print(f"\nfile: {args.size_mib} MiB sent inline by huggingface_hub "
          f"(base64 line {4 * -(-size // 3) / (1 << 20):.0f} MiB)\n")
    print("| server | RSS before | peak RSS growth | growth ÷ file size | upload time |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['label']} | {r['before'] / (1 << 20):.0f} MiB | {r['growth'] / (1 << 20):.1f} MiB | "
              f"**{r['growth'] / size:.3f}×** | {r['seconds']:.1f} s |")


if __name__ == "__main__":
    main()
