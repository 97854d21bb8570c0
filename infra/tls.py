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


def make_certificates(
    directory: str,
    name: str = "dbmazz test",
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    days: int = 2,
) -> Certificates:
    if not shutil.which("openssl"):
        apt_install(["openssl"], "the openssl command is needed to make test certificates")
    os.makedirs(directory, exist_ok=True)
    san = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        str(days),
        "-subj",
        f"/CN={name} CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE,pathlen:0",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )
    _openssl(
        "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={hosts[0]}", cwd=directory
    )
    with open(f"{directory}/server.ext", "w") as fh:
        fh.write(
            f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
        )
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        str(days),
        "-extfile",
        "server.ext",
        cwd=directory,
    )
    os.chmod(f"{directory}/server.key", 0o600)
    os.chmod(f"{directory}/ca.key", 0o600)
    return Certificates(
        f"{directory}/ca.pem", f"{directory}/server.pem", f"{directory}/server.key", directory
    )


class TlsProxy:
    """A TLS-terminating TCP proxy on a free loopback port in front of a plain server (``target_port``), with the
    server certificate of ``certs``: how a server that cannot serve TLS itself (the bundled ClickHouse) is reached
    over HTTPS, as behind a load balancer. ``with TlsProxy(certs, port) as proxy: proxy.port``."""

    def __init__(self, certs: Certificates, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.certs = certs
        self.target = (target_host, target_port)
        self.port: int | None = None
        self._loop = None
        self._thread = None

    def start(self) -> TlsProxy:
        import asyncio
        import ssl
        import threading

        from ._common import free_port, port_open, wait_until

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certs.cert, self.certs.key)
        self.port = free_port()
        self._loop = loop = asyncio.new_event_loop()
        loop.set_exception_handler(lambda *_: None)  # a client that drops the handshake is not our error

        async def pipe(reader, writer) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(reader, writer) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.close()
                return
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        async def serve() -> None:
            await asyncio.start_server(handle, "127.0.0.1", self.port, ssl=context)

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(serve())
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="tls-proxy", daemon=True)
        self._thread.start()
        wait_until(lambda: port_open(self.port), 10, "TLS proxy")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop = None

    def __enter__(self) -> TlsProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
