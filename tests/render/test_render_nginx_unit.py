"""Unit tests of render_nginx_conf: structure and validation (no nginx needed)."""
from __future__ import annotations

import dataclasses
import re

import pytest

from render.nginx import NginxSite, render_nginx_conf

PROD = NginxSite(("ai-meeting.com", "www.ai-meeting.com"), ("api-1:3000", "api-2:3000", "api-3:3000"))


def block(conf: str, header: str) -> str:
    """Text of the brace block that starts with `header {`."""
    start = conf.index(header + " {")
    depth, i = 0, conf.index("{", start)
    for j in range(i, len(conf)):
        depth += {"{": 1, "}": -1}.get(conf[j], 0)
        if depth == 0:
            return conf[i + 1 : j]
    raise AssertionError("unbalanced braces")


def test_plan_directives_present():
    conf = render_nginx_conf(PROD)
    for line in [
        "user nginx;", "worker_processes auto;", "error_log /var/log/nginx/error.log warn;",
        "pid /var/run/nginx.pid;", "worker_connections 2048;", "use epoll;", "multi_accept on;",
        "include /etc/nginx/mime.types;", "access_log /var/log/nginx/access.log main;",
        "sendfile on;", "tcp_nopush on;", "tcp_nodelay on;", "keepalive_timeout 65;",
        "client_max_body_size 100M;", "gzip on;", "gzip_vary on;", "gzip_proxied any;", "gzip_comp_level 6;",
        "listen 80;", "listen 443 ssl http2;", "ssl_protocols TLSv1.2 TLSv1.3;",
        # ciphers: Mozilla intermediate instead of the plan's HIGH:!aNULL:!MD5 (tests/reliability/test_rb_tls_scan.py)
        "ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:", "ssl_prefer_server_ciphers on;",
        "ssl_session_cache shared:SSL:10m;", "ssl_session_timeout 10m;",
        "ssl_certificate /etc/nginx/ssl/fullchain.pem;", "ssl_certificate_key /etc/nginx/ssl/privkey.pem;",
        'add_header X-Frame-Options "SAMEORIGIN" always;', 'add_header X-Content-Type-Options "nosniff" always;',
        'add_header X-XSS-Protection "1; mode=block" always;',
        'add_header Strict-Transport-Security "max-age=31536000" always;',
        "proxy_pass http://api_backend/;", "proxy_pass http://api_backend/ws/;",
        "proxy_set_header Upgrade $http_upgrade;", 'return 200 "healthy\\n";',
        "return 301 https://ai-meeting.com$request_uri;",
    ]:
        assert line in conf, line
    assert "log_format main '$remote_addr - $remote_user [$time_local] \"$request\" '" in conf


def test_upstream_has_every_replica_with_least_conn():
    up = block(render_nginx_conf(PROD), "upstream api_backend")
    assert "least_conn;" in up
    servers = re.findall(r"^\s*server (\S+) max_fails=3 fail_timeout=30s;$", up, re.M)
    assert servers == ["api-1:3000", "api-2:3000", "api-3:3000"]


@pytest.mark.parametrize("n", [1, 2, 5])
def test_upstream_count_equals_replicas(n):
    site = dataclasses.replace(PROD, api_upstreams=tuple(f"api-{i}:3000" for i in range(1, n + 1)))
    up = block(render_nginx_conf(site), "upstream api_backend")
    assert len(re.findall(r"^\s*server ", up, re.M)) == n
    # 0: nginx tries each replica at most once, however many there are.
    assert "proxy_next_upstream_tries 0;" in render_nginx_conf(site)


def test_timeouts_api_and_ws():
    conf = render_nginx_conf(PROD)
    api = block(conf, "location /api/")
    ws = block(conf, "location /ws/")
    for d in ("proxy_connect_timeout 60s;", "proxy_send_timeout 60s;", "proxy_read_timeout 60s;"):
        assert d in api
    for d in ("proxy_send_timeout 7d;", "proxy_read_timeout 7d;", "proxy_http_version 1.1;"):
        assert d in ws
    assert "proxy_next_upstream error timeout" in api


def test_dependency_health_503_does_not_count_against_the_replicas():
    """/health/deps answers 503 while a datastore is down: retried or counted (max_fails), it
    marked every replica down and /api/health returned 502 (tests/reliability/test_rb_datastore_partition.py)."""
    conf = render_nginx_conf(dataclasses.replace(PROD, listen_api_loopback=3000))
    for header in ("location = /api/health/deps", "location = /health/deps"):
        deps = block(conf, header)
        assert "proxy_pass http://api_backend/health/deps;" in deps or "proxy_pass http://api_backend;" in deps, deps
        assert re.search(r"proxy_next_upstream error timeout;", deps) and "http_503" not in deps, deps


def test_no_add_header_inside_https_locations():
    """add_header in a location would drop the server-level security headers there."""
    conf = render_nginx_conf(PROD)
    for loc in ("location /", "location /api/", "location /ws/", "location = /health"):
        for body in re.findall(re.escape(loc) + r" \{(.*?)\n        \}", conf, re.S):
            assert not re.search(r"^\s*add_header", body, re.M), loc


@pytest.mark.parametrize("port,expected", [(443, "https://ai-meeting.com$request_uri"),
                                           (8443, "https://ai-meeting.com:8443$request_uri")])
def test_redirect_port(port, expected):
    conf = render_nginx_conf(dataclasses.replace(PROD, public_https_port=port))
    assert f"return 301 {expected};" in conf


def test_acme_webroot_only_when_set():
    assert "acme-challenge" not in render_nginx_conf(PROD)
    conf = render_nginx_conf(dataclasses.replace(PROD, acme_webroot="/var/www/acme"))
    http = conf[conf.index("listen 80;"):conf.index("listen 443")]
    assert "location ^~ /.well-known/acme-challenge/" in http
    assert "root /var/www/acme;" in http


def test_custom_values_and_listen_address():
    site = dataclasses.replace(PROD, worker_connections=4096, client_max_body_size="512M", max_fails=5,
                               fail_timeout="10s", hsts_max_age=63072000, listen_http=8080, listen_https=8443,
                               listen_address="127.0.0.1", upstream_keepalive=0)
    conf = render_nginx_conf(site)
    assert "worker_connections 4096;" in conf and "client_max_body_size 512M;" in conf
    assert "server api-2:3000 max_fails=5 fail_timeout=10s;" in conf
    assert 'max-age=63072000" always;' in conf
    assert "listen 127.0.0.1:8080;" in conf and "listen 127.0.0.1:8443 ssl http2;" in conf
    assert "keepalive 32;" not in conf


def test_deterministic():
    assert render_nginx_conf(PROD) == render_nginx_conf(PROD)


@pytest.mark.parametrize("changes,match", [
    ({"api_upstreams": ()}, "api_upstreams"),
    ({"api_upstreams": "api:3000"}, "api_upstreams"),
    ({"api_upstreams": ("api",)}, "host:port"),
    ({"api_upstreams": ("api:0",)}, "TCP port"),
    ({"api_upstreams": ("api:3000; evil",)}, "api_upstreams"),
    ({"api_upstreams": ("api-1:3000", "api-1:3000")}, "duplicates"),
    ({"server_names": ()}, "server_names"),
    ({"server_names": ("bad name",)}, "server_names"),
    ({"server_names": ("*.ai-meeting.com",)}, "wildcard"),
    ({"web_upstream": "web"}, "web_upstream"),
    ({"public_https_port": 70000}, "public_https_port"),
    ({"listen_http": 443}, "differ"),
    ({"worker_connections": 0}, "worker_connections"),
    ({"client_max_body_size": "100 MB"}, "client_max_body_size"),
    ({"fail_timeout": "30 seconds"}, "fail_timeout"),
    ({"ssl_certificate": "relative.pem"}, "ssl_certificate"),
    ({"acme_webroot": "/var/www/acme;"}, "acme_webroot"),
    ({"max_fails": -1}, "max_fails"),
    ({"listen_address": "localhost"}, "listen_address"),
])
def test_invalid_input_rejected(changes, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(PROD, **changes)
