"""Throw-away certificates made with the `openssl` command at test time (no downloads): two CAs,
a server certificate for 127.0.0.1/localhost and a client certificate signed by `ca`, a server
certificate signed by `other-ca`, and the client key also encrypted with KEY_PASSWORD."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

KEY_PASSWORD = "key-pw"
CLIENT_CN = "textstream-client"


def openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        pytest.fail("`openssl` is not on PATH (apt-get install openssl)")
    subprocess.run([exe, *args], cwd=cwd, check=True, capture_output=True)


def _issue(cwd: Path, ca: str, name: str, cn: str, san: str | None = None) -> None:
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=cwd)
    ext = []
    if san:
        (cwd / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        ext = ["-extfile", f"{name}.ext"]
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", *ext, cwd=cwd)


def make_pki(d: Path) -> Path:
    """Files in `d`: ca.pem, other-ca.pem, server.pem/.key, client.pem/.key, client-enc.key,
    stranger.pem/.key (signed by other-ca) and server-keystore.pem (chain + key, for Kafka)."""
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN={ca}", cwd=d)
    _issue(d, "ca", "server", "localhost", "DNS:localhost,IP:127.0.0.1")
    _issue(d, "ca", "client", CLIENT_CN)
    _issue(d, "other-ca", "stranger", "localhost", "DNS:localhost,IP:127.0.0.1")
    openssl("pkey", "-in", "client.key", "-aes256", "-passout", f"pass:{KEY_PASSWORD}", "-out", "client-enc.key",
            cwd=d)
    # Kafka's PEM keystore: unencrypted PKCS#8 key and the certificate chain in one file.
    openssl("pkcs8", "-topk8", "-nocrypt", "-in", "server.key", "-out", "server-pkcs8.key", cwd=d)
    (d / "server-keystore.pem").write_text((d / "server-pkcs8.key").read_text() + (d / "server.pem").read_text()
                                           + (d / "ca.pem").read_text())
    return d
