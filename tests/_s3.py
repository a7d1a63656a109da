"""A real S3 API on 127.0.0.1 for the tests: moto's ``ThreadedMotoServer`` (a werkzeug server in
a thread of the test process), one per test session, on a free port. Tests that use it skip with
a reason when moto is not installed (``pip install 'moto[server]>=5'``, the test extra).

``s3_server``: the endpoint URL. ``s3_blobs``: the environment of a home whose blobs live in a
fresh bucket there (``LORADEX_BLOBS=s3://<bucket>/blobs``, ``LORADEX_S3_ENDPOINT_URL``, dummy
credentials, a 5 MiB multipart threshold so tests reach the multipart path with small files).
"""

from __future__ import annotations

import socket
import uuid

import pytest

S3_ENV_KEYS = ("LORADEX_BLOBS", "LORADEX_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
               "AWS_DEFAULT_REGION", "LORADEX_S3_MULTIPART_THRESHOLD", "LORADEX_S3_PART_SIZE",
               "LORADEX_S3_ADDRESSING")
SMALL_THRESHOLD = 5 << 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        pytest.skip(f"moto[server] is not installed ({exc}); the S3 blob store tests need it")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_environment(endpoint: str, bucket: str, prefix: str = "blobs") -> dict:
    return {"LORADEX_BLOBS": f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}",
            "LORADEX_S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "LORADEX_S3_MULTIPART_THRESHOLD": str(SMALL_THRESHOLD),
            "LORADEX_S3_PART_SIZE": str(SMALL_THRESHOLD), "LORADEX_S3_ADDRESSING": "path"}


def make_bucket(endpoint: str, bucket: str | None = None) -> str:
    import boto3

    bucket = bucket or f"loradex-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def s3_blobs(s3_server, monkeypatch) -> dict:
    """This test's home keeps its blobs in a fresh bucket (the environment set, and returned)."""
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    env = s3_environment(s3_server, make_bucket(s3_server))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def raw_client(env: dict):
    """A boto3 client on the test server, to look at or damage objects behind loradex's back."""
    import boto3

    return boto3.client("s3", endpoint_url=env["LORADEX_S3_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def bucket_and_prefix(env: dict) -> tuple[str, str]:
    bucket, _, prefix = env["LORADEX_BLOBS"][len("s3://"):].partition("/")
    return bucket, (prefix + "/" if prefix else "")


class MotoProcess:
    """moto's server in a subprocess on 127.0.0.1 (for bench scripts: a long campaign keeps it
    apart from the harness's own process). ``with MotoProcess() as endpoint: …``."""

    def __enter__(self) -> str:
        import subprocess
        import sys
        import time

        import httpx

        port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                httpx.get(url, timeout=0.5)
                return url
            except httpx.HTTPError:
                time.sleep(0.1)
        self.proc.kill()
        raise RuntimeError("moto server did not start")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
