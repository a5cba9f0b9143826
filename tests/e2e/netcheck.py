"""Small real clients for the checks from the outside: HTTPS with pinned TLS versions, a
websocket handshake and echo, and the set of listening sockets."""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import socket
import ssl
import struct
import subprocess
import threading
import warnings
from pathlib import Path


def tls_context(minimum: ssl.TLSVersion | None = None, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the dev certificate is self-signed
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    return ctx


def https_get(port: int, path: str, host: str = "localhost", ctx: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx or tls_context())
    conn.request("GET", path, headers={"Host": host})
    resp = conn.getresponse()
    body = resp.read().decode(errors="replace")
    headers = {k.lower(): v for k, v in resp.getheaders()}
    conn.close()
    return resp.status, headers, body


def http_get(port: int, path: str, host: str = "localhost") -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Host": host})
    resp = conn.getresponse()
    resp.read()
    headers = {k.lower(): v for k, v in resp.getheaders()}
    conn.close()
    return resp.status, headers


def tls_handshake_ok(port: int, version: ssl.TLSVersion) -> bool:
    # Old protocol versions need the client's own floor lowered too (OpenSSL security level).
    ctx = tls_context(minimum=version, maximum=version)
    if version < ssl.TLSVersion.TLSv1_2:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost"):
                return True
    except (ssl.SSLError, ConnectionResetError, OSError):
        return False


@contextlib.contextmanager
def tls_control_server(version: ssl.TLSVersion, workdir: Path):
    """A local TLS server that offers exactly `version` (old ones included, security level 0):
    the positive control of a refusal check. If tls_handshake_ok cannot complete a TLS 1.1
    handshake with this server, a "refused" from nginx would mean nothing. Yields the port."""
    key, cert = workdir / "control-key.pem", workdir / "control-cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1/TLSv1_1: deprecated, which is the point
        ctx.minimum_version = ctx.maximum_version = version
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            try:
                conn.settimeout(5)
                ctx.wrap_socket(conn, server_side=True).close()
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def websocket_echo(port: int, path: str, message: str, host: str = "localhost") -> tuple[int, str]:
    """RFC 6455 by hand: upgrade, send one masked text frame, read the echoed frame."""
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with tls_context().wrap_socket(raw, server_hostname=host) as s:
            s.sendall(
                (
                    f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(1)
                if not chunk:
                    break
                head += chunk
            status = int(head.split(b" ", 2)[1])
            if status != 101:
                return status, ""
            payload = message.encode()
            mask = os.urandom(4)
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            assert len(payload) < 126
            s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
            first, second = s.recv(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack(">H", s.recv(2))[0]
            data = b""
            while len(data) < length:
                data += s.recv(length - len(data))
            return status, data.decode()


def public_listeners() -> set[int]:
    """TCP ports listening on a non-loopback address of this host."""
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    ports = set()
    for line in out.splitlines():
        local = line.split()[3]
        addr, _, port = local.rpartition(":")
        if not (addr.startswith("127.") or addr in ("[::1]",)):
            ports.add(int(port))
    return ports
