"""Maintenance mode (README: Maintenance mode): the included maintenance.conf and page as pure
functions, then against the real nginx: 503 + Retry-After for the site, /api/ and /ws/, the
health endpoints answering, an allow-listed client passing, and the switch on and off by a
reload of the same master process, nginx.conf untouched."""
from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from render.nginx import (
    MAINTENANCE_EXEMPT,
    Maintenance,
    NginxSite,
    nginx_files_switch_script,
    render_maintenance_page,
    render_nginx_conf,
    render_nginx_maintenance,
)

from render_testlib import NGINX, free_port, need_tool, shell_check
from test_render_nginx_real import SECURITY_HEADERS, backends, local_site, nginx_test, running_nginx

INCLUDE = "/etc/nginx/upstreams/maintenance.conf"
SITE = NginxSite(("ai-meeting.com",), ("api-1:3000", "api-2:3000"), upstreams_include="/etc/nginx/upstreams/upstreams.conf",
                 maintenance_include=INCLUDE)


# ---- pure functions -----------------------------------------------------------------------------

def test_nginx_conf_includes_the_file_and_sends_503_to_the_page():
    conf = render_nginx_conf(SITE)
    assert f"include {INCLUDE};" in conf
    https_server = conf[conf.index("listen 443 ssl"):]
    assert "if ($ai_maintenance) {\n            return 503;" in https_server
    assert "error_page 503 @maintenance;" in https_server
    named = https_server[https_server.index("location @maintenance {"):]
    named = named[: named.index("}")]
    assert "root /etc/nginx/upstreams;" in named and "try_files /maintenance.html =503;" in named
    assert "add_header Retry-After $ai_maintenance_retry_after always;" in named
    # add_header in a location drops the server's: every security header is repeated there.
    for header in ("X-Frame-Options", "X-Content-Type-Options", "X-XSS-Protection", "Strict-Transport-Security"):
        assert f"add_header {header} " in named
    # Only the HTTPS server is gated: port 80 keeps /health, ACME and its redirect.
    http_server = conf[conf.index("listen 80;"): conf.index("listen 443 ssl")]
    assert "ai_maintenance" not in http_server


def test_without_the_include_nothing_changes():
    plain = NginxSite(("ai-meeting.com",), ("api-1:3000",))
    conf = render_nginx_conf(plain)
    assert "ai_maintenance" not in conf and "@maintenance" not in conf and "Retry-After" not in conf


def test_off_defines_the_variables_as_pass():
    text = render_nginx_maintenance(Maintenance())
    assert "maintenance mode off" in text
    assert "map $uri $ai_maintenance {\n    default 0;\n}" in text
    assert 'default "";' in text and "geo" not in text


def test_on_with_allow_list_and_exempt_health():
    text = render_nginx_maintenance(Maintenance(enabled=True, allow=("203.0.113.7", "10.0.0.0/8", "2001:db8::/32"),
                                                retry_after=900))
    geo = text[text.index("geo $ai_maintenance_allowed {"):]
    geo = geo[: geo.index("}")]
    assert "default 0;" in geo
    for net in ("203.0.113.7 1;", "10.0.0.0/8 1;", "2001:db8::/32 1;"):
        assert net in geo
    for path in MAINTENANCE_EXEMPT:
        assert f'"0:{path}" 0;' in text
    assert set(MAINTENANCE_EXEMPT) >= {"/health", "/api/health"}
    assert '"~^1:" 0;' in text and "default 1;" in text
    assert "default 900;" in text


def test_page_escapes_the_message_and_rounds_the_wait():
    page = render_maintenance_page(Maintenance(enabled=True, message='<script>alert("x")</script> & co', retry_after=1800))
    assert "<script>" not in page and "&lt;script&gt;" in page and "&amp; co" in page
    assert "about 30 minutes" in page
    assert "about 1 minute." in render_maintenance_page(Maintenance(retry_after=5))


@pytest.mark.parametrize("kwargs, key", [
    (dict(allow=("10.0.0.1/8",)), "allow[0]"),
    (dict(allow=("not-an-ip",)), "allow[0]"),
    (dict(allow=("10.0.0.0/8", "1.2.3.4; deny all")), "allow[1]"),
    (dict(allow="10.0.0.0/8"), "allow"),
    (dict(retry_after=0), "retry_after"),
    (dict(message=""), "message"),
    (dict(exempt_paths=("/health; return 200",)), "exempt_paths[0]"),
])
def test_bad_values_are_refused_naming_the_field(kwargs, key):
    with pytest.raises(ValueError, match=key.replace("[", r"\[").replace("]", r"\]")):
        Maintenance(**kwargs)


def test_maintenance_include_is_checked():
    with pytest.raises(ValueError, match="maintenance_include"):
        NginxSite(("a.com",), ("api:3000",), maintenance_include="etc/relative")
    with pytest.raises(ValueError, match="maintenance_include must differ"):
        NginxSite(("a.com",), ("api:3000",), upstreams_include="/u/x.conf", maintenance_include="/u/x.conf")


def test_switch_script_writes_each_file_and_reloads(tmp_path):
    files = {"maintenance.conf": render_nginx_maintenance(Maintenance(enabled=True)),
             "maintenance.html": render_maintenance_page(Maintenance(enabled=True))}
    script = nginx_files_switch_script("docker", "aim-nginx", "aim-nginx-upstreams", "nginx:1.22", files, "maintenance mode")
    assert script.count("<<'AI_MEETING_EOF'") == 2
    assert "nginx -t -q" in script and "nginx -s reload" in script
    assert "mv /u/maintenance.conf.prev /u/maintenance.conf" in script
    shell_check(script, tmp_path, "maintenance-switch")
    with pytest.raises(ValueError, match="plain file name"):
        nginx_files_switch_script("docker", "n", "v", "i", {"../x": ""}, "x")
    with pytest.raises(ValueError, match="delimiter"):
        nginx_files_switch_script("docker", "n", "v", "i", {"x": "a\nAI_MEETING_EOF\nb"}, "x")


# ---- the real nginx -------------------------------------------------------------------------------

def write_maintenance(dirpath: Path, m: Maintenance) -> None:
    (dirpath / "maintenance.conf").write_text(render_nginx_maintenance(m))
    (dirpath / "maintenance.html").write_text(render_maintenance_page(m))
    for f in ("maintenance.conf", "maintenance.html"):
        os.chmod(dirpath / f, 0o644)


def get(site: NginxSite, path: str, source: str = "127.0.0.1", headers: dict | None = None):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = http.client.HTTPSConnection("127.0.0.1", site.listen_https, context=ctx, timeout=20, source_address=(source, 0))
    try:
        c.request("GET", path, headers={"Host": "ai-meeting.test", **(headers or {})})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        c.close()


def reload(tmp: Path) -> int:
    subprocess.run([NGINX, "-t", "-q", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)], check=True, capture_output=True)
    pid = int((tmp / "nginx.pid").read_text())
    os.kill(pid, signal.SIGHUP)  # what `nginx -s reload` sends
    time.sleep(1.5)
    return pid


def websocket_status(site: NginxSite, source: str = "127.0.0.1") -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", site.listen_https), timeout=10, source_address=(source, 0)) as raw:
        with ctx.wrap_socket(raw, server_hostname="ai-meeting.test") as s:
            s.sendall(b"GET /ws/room HTTP/1.1\r\nHost: ai-meeting.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            return int(s.recv(4096).split(b" ", 2)[1])


def test_real_nginx_switches_maintenance_on_and_off_by_reload(public_tmp, tls_cert, nginx_user):
    need_tool(NGINX)
    mdir = public_tmp / "m"
    mdir.mkdir()
    os.chmod(mdir, 0o755)
    write_maintenance(mdir, Maintenance())
    with backends("api", "web") as (api, web):
        site = local_site(public_tmp, tls_cert, [api.port], web.port, maintenance_include=str(mdir / "maintenance.conf"))
        r = nginx_test(render_nginx_conf(site), public_tmp)
        assert r.returncode == 0, r.stderr
        conf_before = render_nginx_conf(site)
        with running_nginx(site, public_tmp):
            # off: everything passes, no Retry-After
            status, headers, _ = get(site, "/")
            assert status == 200 and "retry-after" not in headers
            assert get(site, "/api/x")[0] == 200

            # on: only 127.0.0.2 is allow-listed; this test's default client is 127.0.0.1
            write_maintenance(mdir, Maintenance(enabled=True, allow=("127.0.0.2", "10.0.0.0/8"), retry_after=900,
                                                message="Upgrading the database."))
            pid_on = reload(public_tmp)
            api_hits = len(api.hits)
            for path in ("/", "/meetings/42", "/api/x", "/api/health/deps/extra"):
                status, headers, body = get(site, path)
                assert status == 503, (path, status)
                assert headers.get("retry-after") == "900", (path, headers)
                assert headers.get("content-type", "").startswith("text/html")
                assert headers.get("cache-control") == "no-store"
                assert "Upgrading the database." in body and "Down for maintenance" in body
                for name, value in SECURITY_HEADERS.items():
                    assert headers.get(name, "").startswith(value), (path, name)
            assert len(api.hits) == api_hits, "a request reached the API during maintenance"
            assert websocket_status(site) == 503
            # health endpoints keep answering (container healthcheck, post-deploy check, probes)
            status, headers, body = get(site, "/health")
            assert status == 200 and body == "healthy\n" and "retry-after" not in headers
            for path in ("/api/health", "/api/health/deps"):
                status, headers, _ = get(site, path)
                assert status == 200 and "retry-after" not in headers, path
            assert api.hits[-2:] == ["/health", "/health/deps"]
            # the allow-listed client passes through normally, websockets included
            status, headers, _ = get(site, "/api/x", source="127.0.0.2")
            assert status == 200 and "retry-after" not in headers
            assert get(site, "/", source="127.0.0.2")[0] == 200
            assert websocket_status(site, source="127.0.0.2") == 101

            # off again: same master process, nginx.conf never rewritten
            write_maintenance(mdir, Maintenance())
            pid_off = reload(public_tmp)
            status, headers, _ = get(site, "/api/x")
            assert status == 200 and "retry-after" not in headers
            assert get(site, "/")[0] == 200
            assert pid_on == pid_off == int((public_tmp / "nginx.pid").read_text())
            assert (public_tmp / "nginx.conf").read_text() == conf_before


def test_real_nginx_refuses_a_bad_maintenance_file_so_the_switch_rolls_back(public_tmp, tls_cert, nginx_user):
    """The switch script runs `nginx -t` before reloading: a broken include is caught there."""
    need_tool(NGINX)
    mdir = public_tmp / "m"
    mdir.mkdir()
    (mdir / "maintenance.conf").write_text("geo $ai_maintenance_allowed { default 0; 10.0.0.0/99 1; }\n")
    site = local_site(public_tmp, tls_cert, [free_port()], free_port(), maintenance_include=str(mdir / "maintenance.conf"))
    r = nginx_test(render_nginx_conf(site), public_tmp)
    assert r.returncode != 0


def test_real_nginx_passes_an_upstream_503_through_untouched(public_tmp, tls_cert, nginx_user):
    """error_page 503 catches only nginx's own 503 (maintenance): the API's dependency report
    (503 + JSON while a datastore is down) reaches the client as the API sent it."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    need_tool(NGINX)

    class Deps(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = json.dumps({"status": "degraded", "checks": {"redis": "down"}}).encode()
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    api = ThreadingHTTPServer(("127.0.0.1", 0), Deps)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    mdir = public_tmp / "m"
    mdir.mkdir()
    os.chmod(mdir, 0o755)
    write_maintenance(mdir, Maintenance())
    try:
        site = local_site(public_tmp, tls_cert, [api.server_address[1]], free_port(),
                          maintenance_include=str(mdir / "maintenance.conf"))
        with running_nginx(site, public_tmp):
            for path in ("/api/health/deps", "/api/anything"):
                status, headers, body = get(site, path)
                assert status == 503 and headers.get("content-type") == "application/json", (path, headers)
                assert json.loads(body)["checks"] == {"redis": "down"} and "retry-after" not in headers
    finally:
        api.shutdown()
        api.server_close()
