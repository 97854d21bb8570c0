"""A throw-away S3-compatible object store (moto's server mode) on a free loopback port, with one bucket.

    python -m infra.s3                  # start, print the change-log URI and the credentials, stop on Ctrl-C

From Python: ``with S3Server() as s3: s3.uri("changelog")`` gives the change-log root
``s3://<bucket>/changelog?endpoint_override=127.0.0.1:<port>&scheme=http`` (pyarrow's S3 URI form);
the credentials are not in the URI but in ``s3.env()`` (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``), which a process reading the change log needs in its environment, as with a real
store. moto accepts any key pair; a random one per server keeps tests honest about where secrets go
(none may appear in a log or in metadata). Needs ``moto[server]`` (the ``dev`` extra).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile

from ._common import InfraError, exit_on_sigterm, free_port, port_open, serve_forever, wait_until

__all__ = ["S3Server"]

REGION = "us-east-1"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_REQUEST = re.compile(r'"([A-Z]+) (\S+) HTTP/')


class S3Server:
    """Start/stop one moto S3 server with the bucket ``bucket``."""

    def __init__(self, bucket: str = "dbmazz") -> None:
        self.bucket = bucket
        self.access_key = "AKIA" + secrets.token_hex(8).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self.port: int | None = None
        self.base: str | None = None
        self._process: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def uri(self, prefix: str = "") -> str:
        """A pyarrow filesystem URI of ``prefix`` in the bucket; no credentials in it."""
        path = f"{self.bucket}/{prefix.strip('/')}".rstrip("/")
        return f"s3://{path}?endpoint_override={self.host}:{self.port}&scheme=http"

    def env(self) -> dict[str, str]:
        """The environment a client of the store needs (the credentials and the region)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
        }

    def filesystem(self, **options):
        """A ``pyarrow.fs.S3FileSystem`` on this server, with its credentials (paths are ``<bucket>/<key>``)."""
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=REGION,
            endpoint_override=f"{self.host}:{self.port}",
            scheme="http",
            **options,
        )

    @property
    def log_path(self) -> str:
        assert self.base
        return f"{self.base}/server.log"

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request served so far, from the server's access log."""
        with open(self.log_path, errors="replace") as fh:
            text = _ANSI.sub("", fh.read())
        return _REQUEST.findall(text)

    def start(self) -> S3Server:
        try:
            import moto.server  # noqa: F401
        except ImportError as exc:
            raise InfraError(
                "moto's server mode is not installed: pip install 'moto[server]' "
                "(it is in the dev extra: pip install -e '.[dev]')"
            ) from exc
        self.base = tempfile.mkdtemp(prefix="dbmazz-s3-")
        self.port = free_port()
        log = open(self.log_path, "w")
        # its own process (not moto's in-process server): run processes and daemons reach it over HTTP only
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
        )
        log.close()
        atexit.register(self.stop)
        exit_on_sigterm()
        wait_until(
            lambda: port_open(self.port) or self._process.poll() is not None,
            60,
            "moto S3 server",
            self.log_path,
        )
        if self._process.poll() is not None:
            raise InfraError(f"moto S3 server exited at start (log: {open(self.log_path).read()[-2000:]})")
        self.filesystem(allow_bucket_creation=True).create_dir(self.bucket)
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    server = S3Server()
    serve_forever(
        server.start,
        server.stop,
        lambda: json.dumps(
            {
                "changelog": server.uri("changelog"),
                "endpoint": server.endpoint,
                "bucket": server.bucket,
                **server.env(),
            }
        ),
    )


if __name__ == "__main__":
    main()
