"""What the deployed stack must do on the server: containers, HTTPS with the ACME certificate,
renewal with a graceful nginx reload, backups and restore (R6-R16 as the prod path sees them).

Run by test_prod_stack.py against the stack that a real `pulumi up` deployed; kept apart so
a check can be run by hand against any server (a throwaway Ubuntu VM, say).
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import ssl
import subprocess
import threading
import time
from typing import Any

from config.model import Hardening
from tests.prod.conftest import Pebble, ProdServer
from tests.support import cis

PREFIX = "ai-meeting"  # the prod default: container names ai-meeting-<service>
INSTALL = "/opt/ai-meeting"
CA_ON_SERVER = "/etc/ai-meeting-test/pebble-ca.pem"
SERVICES = ["api", "api", "api", "minio", "nginx", "postgres", "redis", "web"]


def docker(s: ProdServer, args: str, **kw):
    return s.sudo(f"docker {args}", **kw)


def stack_containers(s: ProdServer) -> list[dict]:
    ids = docker(s, f"ps -aq --filter network={PREFIX}-network").stdout.split()
    return json.loads(docker(s, f"inspect {' '.join(ids)}").stdout) if ids else []


def cis_findings(s: ProdServer) -> tuple[int, list[str]]:
    """The CIS runtime items (tests/support/cis.py) of every running container of the stack,
    against the default hardening the prod stack deploys."""
    promised = cis.promises(Hardening().model_dump())
    containers = [c for c in stack_containers(s) if c["State"]["Running"]]
    return len(containers), cis.check_containers(containers, lambda cid: docker(s, f"exec {cid} cat /proc/1/status").stdout,
                                                 promised)


def every_container_healthy(s: ProdServer, services: list[str] = SERVICES) -> None:
    containers = stack_containers(s)
    running = [c for c in containers if c["State"]["Status"] != "exited"]
    names = sorted(c["Config"]["Labels"].get("ai-meeting.service", c["Name"]) for c in running)
    assert names == sorted(services), names
    for c in running:
        assert c["State"]["Health"]["Status"] == "healthy", f"{c['Name']}: {c['State']}"
        assert c["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        assert c["HostConfig"]["Memory"] > 0 and c["HostConfig"]["NanoCpus"] > 0, c["Name"]


def only_nginx_publishes_beyond_loopback(s: ProdServer) -> None:
    for c in stack_containers(s):
        for bindings in (c["HostConfig"]["PortBindings"] or {}).values():
            for b in bindings or []:
                if c["Config"]["Labels"].get("ai-meeting.service") != "nginx":
                    assert b["HostIp"] == "127.0.0.1", f"{c['Name']} publishes {b}"


def https(s: ProdServer, root_pem: str, path: str) -> tuple[int, dict[str, str], str, dict]:
    """GET https://<domain><path> through 127.0.0.1:<https_port>, verified against root_pem."""
    ctx = ssl.create_default_context(cadata=root_pem)
    with socket.create_connection((s.host, s.https_port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=s.domain) as tls:
            cert = tls.getpeercert()
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {s.domain}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        body = _unchunk(body)
    return int(lines[0].split()[1]), headers, body.decode(errors="replace"), cert


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out


def served_serial(s: ProdServer) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((s.host, s.https_port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=s.domain) as tls:
            der = tls.getpeercert(binary_form=True)
    pem = ssl.DER_cert_to_PEM_cert(der)
    return subprocess.run(["openssl", "x509", "-noout", "-serial"], input=pem,
                          capture_output=True, text=True, check=True).stdout.strip()


def site_serves_the_acme_certificate(s: ProdServer, pebble: Pebble) -> None:
    root = pebble.issuer_root_pem()
    status, headers, body, cert = https(s, root, "/")
    assert status == 200 and "AI Meeting" in body, (status, body[:300])
    assert ("DNS", s.domain) in cert["subjectAltName"]
    issuer = dict(x[0] for x in cert["issuer"])
    assert issuer["commonName"].startswith("Pebble Intermediate CA"), issuer
    assert headers["strict-transport-security"].startswith("max-age=31536000")
    status, _, body, _ = https(s, root, "/health")
    assert status == 200 and body.strip() == "healthy"
    status, _, body, _ = https(s, root, "/api/health")
    assert status == 200 and json.loads(body)["status"] == "ok", body
    status, _, body, _ = https(s, root, "/api/health/deps")
    assert status == 200, body  # the API reaches postgres, redis and minio with the generated secrets


def http_redirects_to_https(s: ProdServer) -> None:
    with socket.create_connection((s.host, s.http_port), timeout=10) as c:
        c.sendall(f"GET /x?y=1 HTTP/1.1\r\nHost: {s.domain}\r\nConnection: close\r\n\r\n".encode())
        head = c.recv(65536).decode(errors="replace")
    assert head.split()[1] == "301", head
    assert re.search(rf"^Location: https://{re.escape(s.domain)}/x\?y=1\r?$", head, re.M | re.I), head


# --- certificates (R13) ---------------------------------------------------------------------


def renewal_job(s: ProdServer) -> tuple[dict[str, str], str]:
    """The scheduled renewal from /etc/cron.d/ai-meeting-certbot: its environment and command."""
    cron = s.sudo("cat /etc/cron.d/ai-meeting-certbot").stdout
    env: dict[str, str] = {}
    command = ""
    for line in cron.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", line):
            key, _, value = line.partition("=")
            env[key] = value
        elif "certbot" in line:
            fields = line.split(None, 6)
            assert fields[5] == "root", line
            command = fields[6]  # after the 5 schedule fields and the user
    assert command, cron
    return env, command


def renewal_is_scheduled(s: ProdServer, pebble: Pebble) -> None:
    env, command = renewal_job(s)
    assert "certbot renew" in command and "--deploy-hook" in command, command
    hook = re.search(r"--deploy-hook\s+(\S+)", command).group(1)  # type: ignore[union-attr]
    assert s.sudo(f"test -x {hook}", check=False).code == 0, f"deploy hook {hook} is not installed"
    assert f"--server {pebble.directory_url}" in command, command
    # Renewals must trust the configured ACME server's CA as the first issue did.
    assert env.get("REQUESTS_CA_BUNDLE") == CA_ON_SERVER or f"REQUESTS_CA_BUNDLE={CA_ON_SERVER}" in command, \
        f"the scheduled renewal ignores tls.acme_ca_bundle, so it cannot reach this ACME server:\n{command}"


def forced_renewal_reloads_nginx_without_dropping_requests(s: ProdServer, pebble: Pebble) -> None:
    before = served_serial(s)
    nginx = f"{PREFIX}-nginx"
    started = docker(s, f"inspect -f '{{{{.State.StartedAt}}}}' {nginx}").stdout.strip()
    root = pebble.issuer_root_pem()
    results: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                status = https(s, root, "/health")[0]
                results.append("ok" if status == 200 else f"status {status}")
            except Exception as exc:  # noqa: BLE001 - every failure is a dropped request
                results.append(repr(exc))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        # Exactly the scheduled job (its environment and command), forced.
        env, command = renewal_job(s)
        env.setdefault("REQUESTS_CA_BUNDLE", CA_ON_SERVER)
        command = command.partition(" >>")[0]
        assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        # Without a terminal certbot first sleeps up to 8 minutes (spreading load on the CA);
        # right for cron, pointless here.
        s.sudo(f"env -i {assignments} {command} --force-renewal --no-random-sleep-on-renew", timeout=300)
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    after = served_serial(s)
    assert after != before, "nginx still serves the old certificate after the renewal"
    assert docker(s, f"inspect -f '{{{{.State.StartedAt}}}}' {nginx}").stdout.strip() == started, \
        "nginx was restarted instead of reloaded"
    failures = [r for r in results if r != "ok"]
    assert results and not failures, f"{len(failures)} of {len(results)} requests failed: {failures[:5]}"


# --- backups (R16) --------------------------------------------------------------------------


def backup_schedule_installed(s: ProdServer, schedule: str = "0 2 * * *", retention_days: int = 30) -> None:
    cron = s.sudo("cat /etc/cron.d/ai-meeting-backup").stdout
    assert re.search(rf"^{re.escape(schedule)} root .*backup", cron, re.M), cron
    script = s.sudo(f"cat {INSTALL}/bin/backup.sh").stdout
    assert f"RETENTION_DAYS={retention_days}" in script


def _psql(s: ProdServer, sql: str, check: bool = True):
    res = docker(s, f"exec {PREFIX}-postgres psql -U ai_meeting -d ai_meeting -tAc {shlex.quote(sql)}", check=check)
    return res if not check else res.stdout.strip()


def _redis(s: ProdServer, *args: str) -> str:
    # The container has the password in REDISCLI_AUTH (the backup script relies on it too).
    quoted = " ".join(map(shlex.quote, args))
    return docker(s, f"exec {PREFIX}-redis redis-cli --no-auth-warning {quoted}").stdout.strip()


def _mc(s: ProdServer, minio: dict[str, Any], args: str, stdin: str | None = None, check: bool = True):
    alias = f"http://{minio['access_key']}:{minio['secret_key']}@127.0.0.1:9000"
    return docker(s, f"exec -i -e MC_HOST_t={shlex.quote(alias)} {PREFIX}-minio mc {args}", input=stdin, check=check)


def backup_destroy_restore_round_trip(s: ProdServer, minio: dict[str, Any], root_pem: str) -> None:
    bucket = minio["bucket"]
    _psql(s, "CREATE TABLE IF NOT EXISTS prod_test (id int PRIMARY KEY, v text)")
    _psql(s, "INSERT INTO prod_test SELECT g, 'row-' || g FROM generate_series(1, 500) g ON CONFLICT DO NOTHING")
    assert (got := _redis(s, "SET", "prod-test:key", "kept-value")) == "OK", got
    _mc(s, minio, f"pipe t/{bucket}/prod-test/recording.bin", stdin="recording-bytes")
    # An expired backup (40 days old) must be pruned by the next successful run.
    s.sudo(f"mkdir -p {INSTALL}/backups/20000101_000000 && touch -d '40 days ago' {INSTALL}/backups/20000101_000000")

    s.sudo(f"{INSTALL}/bin/backup.sh", timeout=600)
    stamp = s.sudo(f"ls -1 {INSTALL}/backups | grep -E '^[0-9]{{8}}_[0-9]{{6}}$' | sort | tail -1").stdout.strip()
    files = s.sudo(f"ls {INSTALL}/backups/{stamp}").stdout.split()
    for f in ("postgres.sql.gz", "redis-dump.rdb", "minio-data.tar.gz", "config.tar.gz"):
        assert f in files, f"{f} missing from backup {stamp}: {files}"
    assert s.sudo(f"gunzip -t {INSTALL}/backups/{stamp}/postgres.sql.gz", check=False).code == 0
    assert s.sudo(f"test -e {INSTALL}/backups/20000101_000000", check=False).code != 0, \
        "a 40-day-old backup survived the retention of 30 days"

    # Destroy the data.
    _psql(s, "DROP TABLE prod_test")
    _redis(s, "FLUSHALL")
    _mc(s, minio, f"rm t/{bucket}/prod-test/recording.bin")
    assert (got := _redis(s, "GET", "prod-test:key")) == "", f"FLUSHALL left {got!r}"
    assert _mc(s, minio, f"cat t/{bucket}/prod-test/recording.bin", check=False).code != 0

    s.sudo(f"{INSTALL}/bin/restore.sh {stamp} --yes", timeout=900)

    lost = []  # all three checked, so one report says which stores came back
    rows = _psql(s, "SELECT count(*) FROM prod_test", check=False)
    if rows.stdout.strip() != "500":
        lost.append(f"PostgreSQL: {rows.stdout.strip()!r} rows {rows.stderr.strip()[-300:]}")
    key = _redis(s, "GET", "prod-test:key")
    if key != "kept-value":
        lost.append(f"Redis: key prod-test:key is {key!r}")
    obj = _mc(s, minio, f"cat t/{bucket}/prod-test/recording.bin", check=False)
    if obj.stdout != "recording-bytes":
        lost.append(f"MinIO: {obj.stdout[:100]!r} {obj.stderr.strip()[-300:]}")
    assert not lost, "restore.sh finished but did not bring back: " + "; ".join(lost)
    every_container_healthy(s)
    for _ in range(30):  # the API reconnects to the restored stores
        try:
            if https(s, root_pem, "/api/health/deps")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(2)
    raise AssertionError("the API does not reach its data stores after the restore")
