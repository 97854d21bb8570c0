"""Certificates for TLS tests: a throw-away CA and a server certificate it signs (CN 127.0.0.1, SAN 127.0.0.1 and
localhost), PEM files made with the ``openssl`` command. ``make_certificates(dir)`` returns their paths; each call
makes another CA (a second one is the "wrong CA" of a test)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from ._common import InfraError, apt_install

__all__ = ["Certificates", "make_certificates"]


@dataclass(frozen=True)
class Certificates:
    ca: str  # the CA certificate: what a client verifies the server with
    cert: str  # the server certificate, signed by the CA
    key: str  # the server's private key (mode 0600)
    directory: str


def _openssl(*args: str, cwd: str) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise InfraError(f"openssl {args[0]} failed: {result.stderr[-1000:]}")


def make_certificates(directory: str, name: str = "dbmazz test", hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
                      days: int = 2) -> Certificates:
    if not shutil.which("openssl"):
        apt_install(["openssl"], "the openssl command is needed to make test certificates")
    os.makedirs(directory, exist_ok=True)
    san = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", str(days), "-subj", f"/CN={name} CA",
             "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={hosts[0]}", cwd=directory)
    with open(f"{directory}/server.ext", "w") as fh:
        fh.write(f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                 "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", str(days), "-extfile", "server.ext", cwd=directory)
    os.chmod(f"{directory}/server.key", 0o600)
    os.chmod(f"{directory}/ca.key", 0o600)
    return Certificates(f"{directory}/ca.pem", f"{directory}/server.pem", f"{directory}/server.key", directory)
