"""Blob store backends (issue 19): storing a 256 MiB file with the local backend and with the S3
backend (moto's server in a subprocess on 127.0.0.1), each as a ratio of a plain file copy
(4 MiB buffers + fsync) made in the same run on the same disk. Median of ``--repeat`` runs
(default 3), page cache warm (the source is read once first).

    .venv/bin/python bench/blob_store.py [--mib 256] [--repeat 3]

The S3 path: one read pass hashing four ways while 16 MiB parts go up 4 at a time (multipart,
each part with its SHA-256), complete, then a server-side CopyObject to the final key with the
full-object SHA-256 checked. moto keeps objects in memory in one Python process, so the S3 figure
is a floor for a real store's client side, not a network figure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def plain_copy(src: Path, dest: Path) -> None:
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        shutil.copyfileobj(fin, fout, 4 << 20)
        fout.flush()
        os.fsync(fout.fileno())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(200):
        try:
            httpx.get(url, timeout=0.5)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start")


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from loradex.registry.files.blob_store import BlobStore
    from loradex.registry.files.s3_blob_store import S3BlobStore, S3Settings

    size = args.mib << 20
    with tempfile.TemporaryDirectory(prefix="loradex-bench-blobs-", dir=ROOT) as tmp:
        tmp = Path(tmp)
        src = tmp / "src.bin"
        with open(src, "wb") as fh:
            for _ in range(args.mib):
                fh.write(os.urandom(1 << 20))
        src.read_bytes()  # page cache warm
        proc, endpoint = start_moto()
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        try:
            rows = {"copy": [], "local": [], "s3": [], "boto3": []}
            for i in range(args.repeat):
                dest = tmp / f"copy-{i}.bin"
                rows["copy"].append(timed(lambda: plain_copy(src, dest)))
                dest.unlink()
                home = tmp / f"home-{i}"
                store = BlobStore(home)
                rows["local"].append(timed(lambda: store.add_file(src)))
                shutil.rmtree(home, ignore_errors=True)
                s3 = S3BlobStore(S3Settings(bucket=f"bench-{i}", endpoint_url=endpoint, region="us-east-1",
                                            addressing_style="path"), home=tmp / f"s3home-{i}")
                s3.ensure_bucket()
                stored = None

                def add_s3():
                    nonlocal stored
                    stored = s3.add_file(src)

                rows["s3"].append(timed(add_s3))
                assert s3.size_of(stored.hashes.sha256) == size
                s3.remove(stored.hashes.sha256)
                from boto3.s3.transfer import TransferConfig

                config = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=16 << 20, max_concurrency=4)
                rows["boto3"].append(timed(lambda: s3.client.upload_file(str(src), f"bench-{i}", "plain", Config=config)))
                s3.client.delete_object(Bucket=f"bench-{i}", Key="plain")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    med = {k: statistics.median(v) for k, v in rows.items()}
    mibs = {k: args.mib / t for k, t in med.items()}
    print(f"\n{args.mib} MiB file, median of {args.repeat}; load average {os.getloadavg()[0]:.1f}\n")
    print("| measure | time | throughput | ÷ plain copy |")
    print("|---|---:|---:|---:|")
    print(f"| reference: plain copy (4 MiB buffers) + fsync | {med['copy']:.2f} s | {mibs['copy']:,.0f} MiB/s | 1.00× |")
    print(f"| local backend `add_file` (copy + four hashes + fsync + rename) | {med['local']:.2f} s | "
          f"{mibs['local']:,.0f} MiB/s | **{mibs['local'] / mibs['copy']:.2f}×** |")
    print(f"| reference: boto3 `upload_file` (s3transfer, same part size and concurrency, no hashing, no publish) to moto | "
          f"{med['boto3']:.2f} s | {mibs['boto3']:,.0f} MiB/s | {mibs['boto3'] / mibs['copy']:.2f}× |")
    print(f"| S3 backend (moto) `add_file` (multipart + four hashes + CopyObject with SHA-256) | {med['s3']:.2f} s | "
          f"{mibs['s3']:,.0f} MiB/s | **{mibs['s3'] / mibs['copy']:.2f}×** |")
    print(f"| S3 backend ÷ boto3 `upload_file` | | | **{mibs['s3'] / mibs['boto3']:.2f}×** |")


if __name__ == "__main__":
    main()
