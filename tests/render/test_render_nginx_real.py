"""The rendered nginx.conf against the real nginx: `nginx -t`, then a running nginx on
loopback ports in front of small Python backends, checking behaviour end to end."""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import http.client
import json
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from render.nginx import NginxSite, render_nginx_conf

from render_testlib import NGINX, free_port, need_tool, stop_process, wait_port

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# ---- backends ---------------------------------------------------------------------------------

class Backend(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, name: str):
        self.name = name
        self.hits: list[str] = []
        self.active = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as nginx's upstream keepalive expects

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        srv: Backend = self.server  # type: ignore[assignment]
        with srv.lock:
            srv.hits.append(self.path)
            srv.active += 1
        try:
            if self.headers.get("Upgrade", "").lower() == "websocket":
                return self._websocket()
            if self.path.endswith("/slow"):
                time.sleep(3)
            if self.path.endswith("/missing"):
                return self._reply(404, {"error": "not found"})
            self._reply(200, {"backend": srv.name, "path": self.path,
                              "headers": {k.lower(): v for k, v in self.headers.items()}})
        finally:
            with srv.lock:
                srv.active -= 1

    def _reply(self, status: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _websocket(self):
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        # After the upgrade the connection is a raw tunnel: echo whatever arrives.
        while True:
            data = self.connection.recv(4096)
            if not data:
                return
            self.connection.sendall(b"echo:" + data)


@contextlib.contextmanager
def backends(*names: str):
    servers = [Backend(n) for n in names]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    try:
        yield servers
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


# ---- nginx --------------------------------------------------------------------------------------

def local_site(tmp: Path, cert: tuple[str, str], api_ports, web_port: int, **overrides) -> NginxSite:
    """The production shape, with loopback ports/hosts and tmp paths as field values."""
    (tmp / "logs").mkdir(exist_ok=True)
    https = free_port()
    values = dict(
        server_names=("ai-meeting.test", "www.ai-meeting.test"),
        api_upstreams=tuple(f"127.0.0.1:{p}" for p in api_ports),
        web_upstream=f"127.0.0.1:{web_port}",
        listen_address="127.0.0.1", listen_http=free_port(), listen_https=https, public_https_port=https,
        ssl_certificate=cert[0], ssl_certificate_key=cert[1],
        pid_path=str(tmp / "nginx.pid"), log_dir=str(tmp / "logs"),
    )
    values.update(overrides)
    return NginxSite(**values)


def nginx_test(conf_text: str, tmp: Path) -> subprocess.CompletedProcess:
    conf = tmp / "nginx.conf"
    conf.write_text(conf_text)
    return subprocess.run([NGINX, "-t", "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "logs/error.log")],
                          capture_output=True, text=True, timeout=60)


@contextlib.contextmanager
def running_nginx(site: NginxSite, tmp: Path):
    conf = tmp / "nginx.conf"
    conf.write_text(render_nginx_conf(site))
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "logs/error.log"),
                             "-g", "daemon off;"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        host = site.listen_address or "127.0.0.1"
        wait_port(site.listen_https, proc=proc, host=host)
        wait_port(site.listen_http, proc=proc, host=host)
        yield site
    finally:
        stop_process(proc, sig=3)  # SIGQUIT: graceful shutdown of master and workers
        if proc.stdout:
            proc.stdout.close()


def https(site: NginxSite, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = http.client.HTTPSConnection("127.0.0.1", site.listen_https, context=ctx, timeout=20)
    try:
        c.request(method, path, body=body, headers={"Host": "ai-meeting.test", **(headers or {})})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def http_plain(site: NginxSite, path: str):
    c = http.client.HTTPConnection(site.listen_address or "127.0.0.1", site.listen_http, timeout=20)
    try:
        c.request("GET", path, headers={"Host": "www.ai-meeting.test"})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


SECURITY_HEADERS = {
    "x-frame-options": "SAMEORIGIN",
    "x-content-type-options": "nosniff",
    "x-xss-protection": "1; mode=block",
    "strict-transport-security": "max-age=31536000",
}


# ---- nginx -t on several sites ---------------------------------------------------------------

@pytest.mark.parametrize("variant", ["one-replica", "three-replicas", "custom-port", "acme-webroot", "tuned"])
def test_nginx_t_accepts_rendered_config(variant, public_tmp, tls_cert, nginx_user):
    need_tool(NGINX)
    extra = {
        "one-replica": dict(api_ports=[3000]),
        "three-replicas": dict(api_ports=[3000, 3001, 3002]),
        "custom-port": dict(api_ports=[3000, 3001], public_https_port=8443),
        "acme-webroot": dict(api_ports=[3000], acme_webroot=str(public_tmp / "acme")),
        "tuned": dict(api_ports=[3000, 3001, 3002], worker_connections=8192, client_max_body_size="1G",
                      max_fails=5, fail_timeout="10s", upstream_keepalive=0),
    }[variant]
    api_ports = extra.pop("api_ports")
    site = local_site(public_tmp, tls_cert, api_ports, 8080, **extra)
    r = nginx_test(render_nginx_conf(site), public_tmp)
    assert r.returncode == 0, r.stderr
    assert "syntax is ok" in r.stderr and "test is successful" in r.stderr


def test_nginx_t_production_shape_with_names(public_tmp, tls_cert, nginx_user):
    """The prod config names its upstreams api-1..3 and web, which resolve only on the Docker
    network: here nginx may complain about name resolution, and about nothing else."""
    need_tool(NGINX)
    site = local_site(public_tmp, tls_cert, [3000], 8080)
    site = dataclasses.replace(site, api_upstreams=("api-1:3000", "api-2:3000", "api-3:3000"), web_upstream="web:80")
    r = nginx_test(render_nginx_conf(site), public_tmp)
    if r.returncode != 0:
        assert "host not found in upstream" in r.stderr, r.stderr


# ---- a running nginx: behaviour -----------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory, tls_cert, nginx_user):
    need_tool(NGINX)
    import os
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="ai-meeting-nginx-", dir="/tmp"))
    os.chmod(tmp, 0o755)
    (tmp / "acme/.well-known/acme-challenge").mkdir(parents=True)
    (tmp / "acme/.well-known/acme-challenge/tok123").write_text("tok123.thumb")
    for p in (tmp / "acme", tmp / "acme/.well-known", tmp / "acme/.well-known/acme-challenge"):
        os.chmod(p, 0o755)
    os.chmod(tmp / "acme/.well-known/acme-challenge/tok123", 0o644)
    try:
        with backends("api-1", "api-2", "api-3", "web") as servers:
            api, web = servers[:3], servers[3]
            site = local_site(tmp, tls_cert, [s.port for s in api], web.port, acme_webroot=str(tmp / "acme"))
            with running_nginx(site, tmp):
                yield site, api, web
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_http_redirects_to_canonical_https(stack):
    site, _, _ = stack
    status, headers, _ = http_plain(site, "/meetings/42?x=1")
    assert status == 301
    assert headers["location"] == f"https://ai-meeting.test:{site.listen_https}/meetings/42?x=1"


def test_health_on_http_and_https(stack):
    site, _, web = stack
    before = len(web.hits)
    status, headers, body = http_plain(site, "/health")
    assert (status, body) == (200, b"healthy\n")
    assert headers["content-type"].startswith("text/plain")
    status, headers, body = https(site, "GET", "/health")
    assert (status, body) == (200, b"healthy\n")
    assert headers["content-type"].startswith("text/plain")
    for k, v in SECURITY_HEADERS.items():  # the plan's add_header in /health would have lost these
        assert headers.get(k) == v, k
    assert len(web.hits) == before  # answered by nginx itself


def test_acme_challenge_served_on_http(stack):
    site, _, _ = stack
    status, _, body = http_plain(site, "/.well-known/acme-challenge/tok123")
    assert (status, body) == (200, b"tok123.thumb")


def test_security_headers_on_every_https_response(stack):
    site, _, _ = stack
    for path in ("/", "/api/users", "/api/missing", "/nope"):
        status, headers, _ = https(site, "GET", path)
        for k, v in SECURITY_HEADERS.items():
            assert headers.get(k) == v, (path, status, k)
    assert https(site, "GET", "/api/missing")[0] == 404


def test_web_and_api_routing_with_prefix_stripped(stack):
    site, api, _ = stack
    status, _, body = https(site, "GET", "/")
    assert status == 200 and json.loads(body)["backend"] == "web"
    status, _, body = https(site, "GET", "/api/users/7?q=1")
    data = json.loads(body)
    assert status == 200 and data["backend"].startswith("api-")
    assert data["path"] == "/users/7?q=1"  # /api/ prefix stripped
    h = data["headers"]
    assert h["host"] == "ai-meeting.test"
    assert h["x-forwarded-proto"] == "https"
    assert h["x-real-ip"] == "127.0.0.1"


def test_gzip_for_json(stack):
    site, _, _ = stack
    status, headers, _ = https(site, "GET", "/api/gz", headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers.get("content-encoding") == "gzip"


def test_requests_spread_over_all_replicas(stack):
    site, api, _ = stack
    for s in api:
        s.hits.clear()
    for i in range(9):
        assert https(site, "GET", f"/api/spread/{i}")[0] == 200
    assert all(s.hits for s in api), [len(s.hits) for s in api]


def test_least_conn_avoids_busy_replica(stack):
    """With one replica busy on a slow request, least_conn sends new requests elsewhere
    (round robin would still give it a third of them)."""
    site, api, _ = stack
    for s in api:
        s.hits.clear()
    t = threading.Thread(target=https, args=(site, "GET", "/api/slow"))
    t.start()
    deadline = time.monotonic() + 5
    while not any(s.active for s in api) and time.monotonic() < deadline:
        time.sleep(0.05)
    busy = [s for s in api if s.active]
    assert len(busy) == 1
    for i in range(6):
        assert https(site, "GET", f"/api/quick/{i}")[0] == 200
    t.join()
    assert busy[0].hits == ["/slow"], busy[0].hits
    assert sum(len(s.hits) for s in api) == 7


def _ws_handshake(site: NginxSite, path: str) -> tuple[ssl.SSLSocket, bytes]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", site.listen_https), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname="ai-meeting.test")
    key = base64.b64encode(b"0123456789abcdef").decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: ai-meeting.test\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    return sock, head


def test_websocket_upgrade_through_ws(stack):
    site, api, _ = stack
    for s in api:
        s.hits.clear()
    sock, head = _ws_handshake(site, "/ws/room/1")
    try:
        status_line = head.split(b"\r\n", 1)[0]
        assert b" 101 " in status_line, head
        expected = base64.b64encode(hashlib.sha1((base64.b64encode(b"0123456789abcdef").decode() + WS_GUID)
                                                 .encode()).digest())
        assert f"sec-websocket-accept: {expected.decode()}" in head.decode().replace("Sec-WebSocket-Accept", "sec-websocket-accept")
        sock.sendall(b"hello")
        assert sock.recv(100) == b"echo:hello"
    finally:
        sock.close()
    assert ["/ws/room/1"] in [s.hits for s in api]  # /ws/ kept on the upstream side


def test_dead_replica_is_skipped(public_tmp, tls_cert, nginx_user):
    need_tool(NGINX)
    dead = free_port()  # nothing listens here
    with backends("api-1", "web") as (live, web):
        site = local_site(public_tmp, tls_cert, [dead, live.port], web.port)
        with running_nginx(site, public_tmp):
            results = [https(site, "GET", f"/api/r/{i}")[0] for i in range(10)]
            ws, head = _ws_handshake(site, "/ws/x")
            ws.close()
    assert results == [200] * 10
    assert b" 101 " in head.split(b"\r\n", 1)[0]
    assert len(live.hits) == 11


def _s_client(site: NginxSite, *args: str) -> subprocess.CompletedProcess:
    openssl = need_tool("openssl")
    return subprocess.run([openssl, "s_client", "-connect", f"127.0.0.1:{site.listen_https}",
                           "-servername", "ai-meeting.test", *args],
                          input="", capture_output=True, text=True, timeout=30)


def test_tls_versions(stack):
    site, _, _ = stack
    # SECLEVEL=0 so the *client* is willing to offer TLS 1.1: the refusal must come from nginx.
    r = _s_client(site, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert r.returncode != 0, r.stdout
    assert "alert protocol version" in r.stderr, r.stderr  # nginx answered: protocol not allowed
    assert "Cipher is (NONE)" in r.stdout
    r = _s_client(site, "-tls1_2")
    assert r.returncode == 0 and "TLSv1.2" in r.stdout, r.stdout + r.stderr
    r = _s_client(site, "-tls1_3")
    assert r.returncode == 0 and "TLSv1.3" in r.stdout, r.stdout + r.stderr


def test_http2_negotiated(stack):
    site, _, _ = stack
    curl = need_tool("curl")
    r = subprocess.run([curl, "-sk", "--http2", "-o", "/dev/null", "-w", "%{http_version}",
                        "--resolve", f"ai-meeting.test:{site.listen_https}:127.0.0.1",
                        f"https://ai-meeting.test:{site.listen_https}/health"],
                       capture_output=True, text=True, timeout=30)
    assert r.stdout == "2", r.stdout + r.stderr


def test_body_size_limit(public_tmp, tls_cert, nginx_user):
    need_tool(NGINX)
    with backends("api-1", "web") as (api, web):
        site = local_site(public_tmp, tls_cert, [api.port], web.port, client_max_body_size="1k")
        with running_nginx(site, public_tmp):
            status, headers, _ = https(site, "POST", "/api/upload", body=b"x" * 4096)
    assert status == 413
    assert headers.get("x-frame-options") == "SAMEORIGIN"


# ---- upstreams in their own file, switched by a reload (how a deploy scales and rolls out) ----

def test_upstream_switch_by_reload_drops_no_request(public_tmp, tls_cert, nginx_user):
    """nginx.conf includes the upstream file; rewriting it and reloading moves traffic from the
    old replicas to the new ones while requests keep flowing, with none failed. The loopback API
    listener proxies to the same upstream."""
    from render.nginx import render_nginx_upstreams

    need_tool(NGINX)
    upstreams = public_tmp / "upstreams.conf"
    with backends("old-api", "new-api-1", "new-api-2", "web") as (old, new1, new2, web):
        site = local_site(public_tmp, tls_cert, [old.port], web.port,
                          upstreams_include=str(upstreams), listen_api_loopback=free_port())
        upstreams.write_text(render_nginx_upstreams(site))
        assert "upstream api_backend" in upstreams.read_text()
        assert "upstream api_backend" not in render_nginx_conf(site), "nginx.conf must only include the upstreams"
        with running_nginx(site, public_tmp):
            wait_port(site.listen_api_loopback)
            failures: list[str] = []
            stop = threading.Event()

            def load():
                while not stop.is_set():
                    try:
                        status = https(site, "GET", "/api/ping")[0]
                        if status != 200:
                            failures.append(str(status))
                    except Exception as exc:  # noqa: BLE001 - any failure counts
                        failures.append(repr(exc))

            workers = [threading.Thread(target=load, daemon=True) for _ in range(4)]
            for w in workers:
                w.start()
            time.sleep(1)
            switched = dataclasses.replace(site, api_upstreams=(f"127.0.0.1:{new1.port}", f"127.0.0.1:{new2.port}"))
            upstreams.write_text(render_nginx_upstreams(switched))
            pid = int((public_tmp / "nginx.pid").read_text())
            subprocess.run([NGINX, "-t", "-c", str(public_tmp / "nginx.conf"), "-p", str(public_tmp)],
                           check=True, capture_output=True)
            import os
            import signal as sig

            os.kill(pid, sig.SIGHUP)  # what `nginx -s reload` sends
            time.sleep(2)
            old_hits = len(old.hits)
            time.sleep(1)
            stop.set()
            for w in workers:
                w.join(timeout=30)
            c = http.client.HTTPConnection("127.0.0.1", site.listen_api_loopback, timeout=10)
            c.request("GET", "/ping")
            loopback = c.getresponse()
            loopback_body = json.loads(loopback.read())
    assert not failures, failures[:5]
    assert old.hits and new1.hits and new2.hits
    assert len(old.hits) == old_hits, "the old replica still got requests after the reload"
    assert loopback.status == 200 and loopback_body["backend"].startswith("new-api")


def test_nginx_t_swarm_shape_resolves_at_request_time(public_tmp, tls_cert, nginx_user):
    """target.kind swarm: `api`/`web` are service names in variables, resolved per request
    through Docker's DNS (127.0.0.11), so `nginx -t` passes where they do not resolve at all."""
    need_tool(NGINX)
    site = local_site(public_tmp, tls_cert, [3000], 8080)
    site = dataclasses.replace(site, api_upstreams=("api:3000",), web_upstream="web:80", dns_resolver="127.0.0.11",
                               api_connect_timeout="2s", ws_connect_timeout="2s", listen_api_loopback=free_port())
    text = render_nginx_conf(site)
    assert "resolver 127.0.0.11 valid=5s" in text and "upstream api_backend" not in text
    r = nginx_test(text, public_tmp)
    assert r.returncode == 0, r.stderr


# ---- a swarm's edge nodes answering each other's ACME challenges --------------------------------

class PeersDns(threading.Thread):
    """A DNS server on loopback that answers every A query with the given addresses (what
    Docker's DNS answers for a dnsrr service name: one address per task)."""

    def __init__(self, addresses: list[str]):
        super().__init__(daemon=True)
        self.addresses = addresses
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def run(self) -> None:
        while True:
            try:
                query, client = self.sock.recvfrom(512)
            except OSError:
                return
            end = 12
            while query[end]:
                end += query[end] + 1
            question = query[12:end + 5]
            answers = b"".join(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x05\x00\x04" + socket.inet_aton(a)
                               for a in self.addresses)
            header = query[:2] + b"\x81\x80\x00\x01" + len(self.addresses).to_bytes(2, "big") + b"\x00\x00\x00\x00"
            self.sock.sendto(header + question + answers, client)


def test_any_edge_node_answers_the_challenge_of_another(tls_cert, nginx_user):
    """Two edge nginx (127.0.0.2, 127.0.0.3), each with its own webroot and the peers' name
    resolving to both: a token held by either is served on port 80 of both; an unknown token
    is a 404 from both, after asking every peer once (no loop)."""
    need_tool(NGINX)
    import os
    import shutil
    import tempfile

    dns = PeersDns(["127.0.0.2", "127.0.0.3"])
    dns.start()
    peer_port = free_port()
    tmps: list[Path] = []
    try:
        with contextlib.ExitStack() as stack, backends("api", "web") as servers:
            sites = []
            for ip, token in (("127.0.0.2", "tok-a"), ("127.0.0.3", "tok-b")):
                tmp = Path(tempfile.mkdtemp(prefix="ai-meeting-edge-", dir="/tmp"))
                tmps.append(tmp)
                os.chmod(tmp, 0o755)
                challenges = tmp / "acme/.well-known/acme-challenge"
                challenges.mkdir(parents=True)
                (challenges / token).write_text(f"{token}.thumb")
                for p in (tmp / "acme", tmp / "acme/.well-known", challenges):
                    os.chmod(p, 0o755)
                os.chmod(challenges / token, 0o644)
                site = local_site(tmp, tls_cert, [servers[0].port], servers[1].port, listen_address=ip,
                                  acme_webroot=str(tmp / "acme"), dns_resolver=f"127.0.0.1:{dns.port}",
                                  api_upstreams=(f"127.0.0.1:{servers[0].port}",), acme_peers=f"edge-peers:{peer_port}")
                stack.enter_context(running_nginx(site, tmp))
                sites.append(site)
            for site in sites:
                for token in ("tok-a", "tok-b"):
                    status, _, body = http_plain(site, f"/.well-known/acme-challenge/{token}")
                    assert (status, body) == (200, f"{token}.thumb".encode()), (site.listen_address, token, status, body)
                status, _, _ = http_plain(site, "/.well-known/acme-challenge/unknown")
                assert status == 404, (site.listen_address, status)
                # The peer listener serves challenges only.
                c = http.client.HTTPConnection(site.listen_address, peer_port, timeout=10)
                c.request("GET", "/api/health")
                assert c.getresponse().status == 404
                c.close()
    finally:
        dns.sock.close()
        for tmp in tmps:
            shutil.rmtree(tmp, ignore_errors=True)

