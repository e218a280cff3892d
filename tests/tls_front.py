"""A TLS front for the local broker: Kafka over mutual TLS on loopback, for the client-security tests.

Tansu speaks plaintext only, so ``TlsBroker`` starts one that *advertises* the front's port, and the front
terminates TLS (requiring a client certificate signed by the test CA) and forwards the bytes. Every client
that reaches the broker has therefore done a real TLS handshake with our settings; ``peers`` lists the
client certificates' common names the front accepted. The test PKI (CA, server and client certificates)
is made with the ``openssl`` command line.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

from lab.broker import free_port, resolve_binary
from services.processes import die_with_parent


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (CN emd-worker), as PEM files."""
    folder.mkdir(parents=True, exist_ok=True)
    p = {
        name: folder / name
        for name in ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")
    }
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(p["ca.key"]),
        "-out",
        str(p["ca.pem"]),
        "-days",
        "2",
        "-subj",
        "/CN=emd test CA",
    )
    for name, cn, ext in (
        ("server", "127.0.0.1", "subjectAltName=IP:127.0.0.1"),
        ("client", "emd-worker", "extendedKeyUsage=clientAuth"),
    ):
        csr = folder / f"{name}.csr"
        _openssl(
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(p[f"{name}.key"]),
            "-out",
            str(csr),
            "-subj",
            f"/CN={cn}",
        )
        extfile = folder / f"{name}.ext"
        extfile.write_text(ext + "\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(p["ca.pem"]),
            "-CAkey",
            str(p["ca.key"]),
            "-CAcreateserial",
            "-out",
            str(p[f"{name}.pem"]),
            "-days",
            "2",
            "-extfile",
            str(extfile),
        )
    return p


class TlsBroker:
    """Tansu behind a mutual-TLS front on loopback; ``bootstrap_servers`` is the TLS address."""

    def __init__(self, pki: dict[str, Path]) -> None:
        self.pki = pki
        self.port, self.backend_port = free_port(), free_port()
        self.peers: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def plaintext_servers(self) -> str:
        """The broker itself, for tests to read what arrived (it advertises the TLS port, so only bootstrap)."""
        return f"127.0.0.1:{self.backend_port}"

    def start(self) -> TlsBroker:
        self._process = subprocess.Popen(
            [
                resolve_binary(),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{self.backend_port}",
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{self.port}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.pki["ca.pem"]))
        context.load_cert_chain(str(self.pki["server.pem"]), str(self.pki["server.key"]))
        context.verify_mode = ssl.CERT_REQUIRED
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(context), self._loop).result(10)
        deadline = time.monotonic() + 30
        while not _port_open(self.backend_port):
            if time.monotonic() > deadline or self._process.poll() is not None:
                self.stop()
                raise RuntimeError("the broker behind the TLS front did not start")
            time.sleep(0.1)
        return self

    async def _serve(self, context: ssl.SSLContext) -> None:
        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                writer.close()

        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            cert = writer.get_extra_info("peercert") or {}
            self.peers.extend(v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName")
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        self._server = await asyncio.start_server(client, "127.0.0.1", self.port, ssl=context)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._server.close)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def __enter__(self) -> TlsBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
