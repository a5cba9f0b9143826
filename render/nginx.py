"""nginx.conf for the reverse proxy (plan §4.6 + §13 upstream), as a pure function."""
from __future__ import annotations

import html
import ipaddress
import re
import shlex
from dataclasses import dataclass

from ._templating import check_hostname, check_path, check_port, check_positive, render

_SIZE_RE = re.compile(r"^[0-9]+[kKmMgG]?$")
_TIME_RE = re.compile(r"^[0-9]+(ms|s|m|h|d|w|M|y)?$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class NginxSite:
    server_names: tuple[str, ...]  # first = canonical host (redirect target)
    api_upstreams: tuple[str, ...]  # "host:port" per API replica
    web_upstream: str = "web:80"
    public_https_port: int = 443  # port in the HTTP->HTTPS redirect (omitted when 443)
    worker_connections: int = 2048
    client_max_body_size: str = "100M"
    max_fails: int = 3
    fail_timeout: str = "30s"
    hsts_max_age: int = 31536000
    ssl_certificate: str = "/etc/nginx/ssl/fullchain.pem"
    ssl_certificate_key: str = "/etc/nginx/ssl/privkey.pem"
    acme_webroot: str | None = None  # port 80 serves /.well-known/acme-challenge/ from here
    # Swarm: "name:port" resolving (through dns_resolver) to every edge nginx. A challenge not
    # in this node's webroot is asked of the others on that port (an overlay-only listener that
    # serves only its own webroot), so HTTP-01 succeeds whichever edge node the CA reaches.
    acme_peers: str | None = None
    # Ports nginx listens on inside its container (the published ports may differ).
    listen_http: int = 80
    listen_https: int = 443
    listen_address: str | None = None  # e.g. "127.0.0.1"; None = all addresses (the container)
    user: str = "nginx"
    pid_path: str = "/var/run/nginx.pid"
    log_dir: str = "/var/log/nginx"
    mime_types: str = "/etc/nginx/mime.types"
    upstream_keepalive: int = 32  # idle upstream connections per worker; 0 disables
    api_timeout: str = "60s"
    ws_timeout: str = "7d"
    ws_connect_timeout: str = "60s"
    # Where the upstream blocks live: None renders them inline; a path makes nginx.conf include
    # that file (render_nginx_upstreams), which a deploy rewrites and reloads on its own.
    upstreams_include: str | None = None
    # A plain-HTTP listener proxying to the API replicas (published on 127.0.0.1), or None.
    listen_api_loopback: int | None = None
    # Docker Swarm (endpoint mode dnsrr): resolve `api`/`web` through this DNS server at request
    # time instead of fixed upstream blocks; api_upstreams is then the one service name:port.
    dns_resolver: str | None = None
    # TCP connect timeout to an API replica (default: api_timeout). Short in a swarm: a task
    # on a node that just died does not refuse, it never answers; the next address is tried.
    api_connect_timeout: str | None = None
    # Maintenance mode: nginx.conf includes this file (render_nginx_maintenance) at http level
    # and consults its variables on every HTTPS request; maintenance.html lives next to it.
    # Switching maintenance rewrites the file and reloads: nginx.conf itself never changes.
    # None: no maintenance hooks at all.
    maintenance_include: str | None = None

    def __post_init__(self) -> None:
        validate_site(self)


def _check_upstream(value: str, what: str) -> None:
    host, sep, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not sep or not port.isdigit():
        raise ValueError(f"{what}: {value!r} must be host:port")
    check_port(int(port), what)
    if not re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", host):
        check_hostname(host, what)


def validate_site(s: NginxSite) -> None:
    if isinstance(s.server_names, str) or not isinstance(s.server_names, tuple) or not s.server_names:
        raise ValueError("server_names: at least one host name is required (a tuple of str)")
    for i, name in enumerate(s.server_names):
        check_hostname(name, f"server_names[{i}]")
    if s.server_names[0].startswith("*."):
        raise ValueError("server_names[0]: the canonical host (redirect target) cannot be a wildcard")
    if len(set(s.server_names)) != len(s.server_names):
        raise ValueError(f"server_names: duplicates in {s.server_names!r}")
    if isinstance(s.api_upstreams, str) or not isinstance(s.api_upstreams, tuple) or not s.api_upstreams:
        raise ValueError("api_upstreams: at least one API replica (host:port) is required")
    for i, up in enumerate(s.api_upstreams):
        _check_upstream(up, f"api_upstreams[{i}]")
    if len(set(s.api_upstreams)) != len(s.api_upstreams):
        raise ValueError(f"api_upstreams: duplicates in {s.api_upstreams!r}")
    _check_upstream(s.web_upstream, "web_upstream")
    check_port(s.public_https_port, "public_https_port")
    check_port(s.listen_http, "listen_http")
    check_port(s.listen_https, "listen_https")
    if s.listen_http == s.listen_https:
        raise ValueError("listen_http and listen_https must differ")
    if s.listen_address is not None and not re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", s.listen_address):
        raise ValueError(f"listen_address: {s.listen_address!r} must be an IPv4 address")
    check_positive(s.worker_connections, "worker_connections", 16)
    check_positive(s.max_fails, "max_fails", 0)
    check_positive(s.hsts_max_age, "hsts_max_age", 0)
    check_positive(s.upstream_keepalive, "upstream_keepalive", 0)
    if not isinstance(s.client_max_body_size, str) or not _SIZE_RE.match(s.client_max_body_size):
        raise ValueError(f"client_max_body_size: {s.client_max_body_size!r} must look like 100M, 512k or 0")
    if s.dns_resolver is not None:
        if not re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}(:\d{1,5})?", s.dns_resolver):
            raise ValueError(f"dns_resolver: {s.dns_resolver!r} must be an IPv4 address (with an optional :port)")
        if len(s.api_upstreams) != 1:
            raise ValueError("api_upstreams: with dns_resolver, one service name:port (its DNS name has every task)")
    if s.api_connect_timeout is not None and (not isinstance(s.api_connect_timeout, str) or not _TIME_RE.match(s.api_connect_timeout)):
        raise ValueError(f"api_connect_timeout: {s.api_connect_timeout!r} must be an nginx time such as 2s")
    for field in ("fail_timeout", "api_timeout", "ws_timeout", "ws_connect_timeout"):
        v = getattr(s, field)
        if not isinstance(v, str) or not _TIME_RE.match(v):
            raise ValueError(f"{field}: {v!r} must be an nginx time such as 30s, 60s or 7d")
    for field in ("ssl_certificate", "ssl_certificate_key", "pid_path", "log_dir", "mime_types"):
        check_path(getattr(s, field), field)
    if s.acme_webroot is not None:
        check_path(s.acme_webroot, "acme_webroot")
    if s.acme_peers is not None:
        _check_upstream(s.acme_peers, "acme_peers")
        if s.acme_webroot is None or s.dns_resolver is None:
            raise ValueError("acme_peers: needs acme_webroot and dns_resolver (the peers are re-resolved by name)")
        if int(s.acme_peers.rpartition(":")[2]) in (s.listen_http, s.listen_https, s.listen_api_loopback):
            raise ValueError("acme_peers: its port must differ from nginx's other listeners")
    if s.upstreams_include is not None:
        check_path(s.upstreams_include, "upstreams_include")
    if s.maintenance_include is not None:
        check_path(s.maintenance_include, "maintenance_include")
        if s.maintenance_include == s.upstreams_include:
            raise ValueError("maintenance_include must differ from upstreams_include")
    if s.listen_api_loopback is not None:
        check_port(s.listen_api_loopback, "listen_api_loopback")
        if s.listen_api_loopback in (s.listen_http, s.listen_https):
            raise ValueError("listen_api_loopback must differ from listen_http and listen_https")
    if not _USER_RE.match(s.user):
        raise ValueError(f"user: {s.user!r} is not a valid user name")


def redirect_base(s: NginxSite) -> str:
    port = "" if s.public_https_port == 443 else f":{s.public_https_port}"
    return f"https://{s.server_names[0]}{port}"


def render_nginx_conf(site: NginxSite) -> str:
    validate_site(site)  # also checked at construction; dataclasses.replace re-runs it too
    bind = f"{site.listen_address}:" if site.listen_address else ""
    page_dir = site.maintenance_include.rsplit("/", 1)[0] or "/" if site.maintenance_include else None
    peer_host, _, peer_port = (site.acme_peers or "").rpartition(":")
    return render("nginx.conf.j2", s=site, redirect_base=redirect_base(site),
                  listen_http=f"{bind}{site.listen_http}", listen_https=f"{bind}{site.listen_https}",
                  acme_peer_host=peer_host, acme_peer_port=peer_port, listen_acme_peers=f"{bind}{peer_port}",
                  maintenance_page_dir=page_dir, maintenance_page=MAINTENANCE_PAGE)


def render_nginx_upstreams(site: NginxSite) -> str:
    """The upstream blocks alone, for the file that nginx.conf includes (upstreams_include)."""
    validate_site(site)
    return "# Rendered by render/nginx.py: the API replicas and the web front end behind nginx.\n" + render(
        "nginx-upstreams.conf.j2", s=site
    )


# ---- maintenance mode ---------------------------------------------------------------------------

MAINTENANCE_PAGE = "maintenance.html"  # next to the maintenance_include file
# Answer during maintenance: the container healthcheck and the post-deploy check (/health,
# /api/health), the monitoring probes (the same two) and the API's dependency report.
MAINTENANCE_EXEMPT = ("/health", "/api/health", "/api/health/deps")


@dataclass(frozen=True)
class Maintenance:
    enabled: bool = False
    allow: tuple[str, ...] = ()  # client addresses / networks that pass through (nginx geo)
    message: str = "AI Meeting is down for maintenance. Please try again shortly."
    retry_after: int = 600  # seconds
    exempt_paths: tuple[str, ...] = MAINTENANCE_EXEMPT

    def __post_init__(self) -> None:
        validate_maintenance(self)


def validate_maintenance(m: Maintenance) -> None:
    if not isinstance(m.enabled, bool):
        raise ValueError(f"enabled: {m.enabled!r} must be true or false")
    if isinstance(m.allow, str) or not isinstance(m.allow, tuple):
        raise ValueError("allow: a tuple of addresses or networks")
    for i, a in enumerate(m.allow):
        try:
            ipaddress.ip_network(a, strict=True)
        except (ValueError, TypeError):
            raise ValueError(f"allow[{i}]: {a!r} is not an IP address or network with its host bits clear") from None
    check_positive(m.retry_after, "retry_after")
    if not isinstance(m.message, str) or not m.message.strip() or len(m.message) > 1000:
        raise ValueError("message: 1 to 1000 characters")
    for i, p in enumerate(m.exempt_paths):
        check_path(p, f"exempt_paths[{i}]")


def render_nginx_maintenance(m: Maintenance) -> str:
    """The http-level file nginx.conf includes (maintenance_include): it defines
    $ai_maintenance (1 = answer 503) and $ai_maintenance_retry_after for every request."""
    validate_maintenance(m)
    return render("nginx-maintenance.conf.j2", m=m)


def render_maintenance_page(m: Maintenance) -> str:
    """The 503 page: small, self-contained, the operator's message escaped."""
    validate_maintenance(m)
    return render("maintenance.html.j2", message=html.escape(m.message), retry_minutes=max(1, round(m.retry_after / 60)))


def maintenance_files(m: Maintenance) -> dict[str, str]:
    """What the maintenance switch puts next to nginx.conf's maintenance_include (file names
    as nginx.conf expects them)."""
    return {"maintenance.conf": render_nginx_maintenance(m), MAINTENANCE_PAGE: render_maintenance_page(m)}


def nginx_files_switch_script(docker_cli: str, nginx: str, volume: str, helper_image: str,
                              files: dict[str, str], what: str) -> str:
    """Put files (name -> text) into the volume nginx includes them from, then, if nginx runs,
    check the config, reload gracefully and wait (at most 10 s) for the old workers to finish.
    The files are written by a throwaway container (so this works before nginx exists), each
    atomically (write, keep the previous as .prev, rename); a config nginx refuses is rolled
    back. The same shape as the upstream switch in components/proxy.py."""
    for name in files:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ValueError(f"files: {name!r} must be a plain file name")
        if "\nAI_MEETING_EOF\n" in f"\n{files[name]}\n":
            raise ValueError(f"files[{name}]: must not contain the here-doc delimiter")
    in_volume = f"--network none --user 0 --entrypoint sh -v {volume}:/u {helper_image}"
    lines = ["set -euo pipefail"]
    for name, text in files.items():
        write = f"cat > /u/{name}.new && {{ [ ! -f /u/{name} ] || cp /u/{name} /u/{name}.prev; }} && mv /u/{name}.new /u/{name}"
        lines.append(f"{docker_cli} run --rm -i {in_volume} -c {shlex.quote(write)} <<'AI_MEETING_EOF'\n{text.rstrip()}\nAI_MEETING_EOF")
    restore = " ; ".join(f"[ ! -f /u/{n}.prev ] || mv /u/{n}.prev /u/{n}" for n in files)
    lines.append(f"""if [ "$({docker_cli} inspect -f '{{{{.State.Running}}}}' {nginx} 2>/dev/null)" = true ]; then
  if ! {docker_cli} exec {nginx} nginx -t -q; then
    {docker_cli} run --rm {in_volume} -c {shlex.quote(restore)}
    echo 'nginx refused the new {what}; the previous one stays in place' >&2
    exit 1
  fi
  {docker_cli} exec {nginx} nginx -s reload
  for _ in $(seq 1 20); do
    sleep 0.5
    {docker_cli} exec {nginx} sh -c 'grep -qs "worker process is shutting dow[n]" /proc/[0-9]*/cmdline' || break
  done
  echo 'nginx reloaded with the new {what}'
else
  echo '{what} written; nginx starts with it'
fi""")
    return "\n".join(lines)
