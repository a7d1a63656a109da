"""Helpers for tests/test_civitai_conformance.py: `loradex serve`'s app under uvicorn with the
options `serve` itself passes (TLS, trusted proxies: ``server.app.uvicorn_options``), a
self-signed certificate for 127.0.0.1, and the third-party clients (skipped when not installed).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

from _served_app import ServedApp

CLIENTS = {"civitapy": "civitapy", "civitai-hub": "civitai_hub"}  # PyPI name → import name


def need_client(name: str):
    """The client's module, or a skip naming the package to install."""
    module = CLIENTS[name]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"the third-party Civitai client {name} is not installed "
                    f"(pip install -e '.[test]' installs it)")
    return importlib.import_module(module)


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (IP SAN) and its key, made with the `cryptography` package
    when it is installed, else the `openssl` command; a skip when neither is there."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        _with_cryptography(cert, key)
        return cert, key
    except ImportError:
        pass
    if shutil.which("openssl") is None:
        pytest.skip("neither the cryptography package nor the openssl command is available to make a test certificate")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-addext", "basicConstraints=critical,CA:TRUE"], check=True, capture_output=True)
    return cert, key


def _with_cryptography(cert: Path, key: Path) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    pk = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(pk.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
         .not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
         .sign(pk, hashes.SHA256()))
    key.write_bytes(pk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    cert.write_bytes(c.public_bytes(serialization.Encoding.PEM))


class Served(ServedApp):
    """``app`` under uvicorn on 127.0.0.1 with ``serve``'s options (``tls``: (cert, key);
    ``trusted_proxies``); ``url`` is http(s)://127.0.0.1:PORT."""

    def __init__(self, app, *, tls=None, trusted_proxies=None):
        from loradex.registry.server.app import uvicorn_options

        super().__init__(app, options=lambda port: uvicorn_options(
            "127.0.0.1", port, tls=tls and (str(tls[0]), str(tls[1])), trusted_proxies=trusted_proxies),
            scheme="https" if tls else "http")
