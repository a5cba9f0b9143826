"""The prod path for real: `pulumi up` with a prod-like stack takes the bare test server to
serving meet.test over HTTPS with a certificate from pebble, and its operations work.

One module-scoped stack on the session's server; the tests run in file order and build on
each other (a failed `up` skips the rest). See docs/prod-testing.md for the harness.
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
from pathlib import Path

import pytest
import yaml

from tests.e2e.engine import REPO, PulumiProject, require_engine, unavailable
from tests.prod import checks
from tests.prod.conftest import Pebble, ProdServer

pytestmark = [pytest.mark.prod, pytest.mark.e2e, pytest.mark.timeout(2400)]

CA_ON_SERVER = "/etc/ai-meeting-test/pebble-ca.pem"
INSTALL = "/opt/ai-meeting"
PREFIX = "ai-meeting"  # the prod default: container names ai-meeting-<service>
SERVICES = ["api", "api", "api", "minio", "nginx", "postgres", "redis", "web"]


def local_images() -> dict[str, str]:
    """The dev stack's image refs (local stand-ins built by scripts/build-local-images)."""
    dev = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())["config"]["ai-meeting:images"]
    return {k: v for k, v in dev.items() if k != "pull"}


def missing_images(images: dict[str, str]) -> list[str]:
    return [
        ref for ref in images.values()
        if subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode != 0
    ]


class Deployment:
    def __init__(self, project: PulumiProject, server: ProdServer, pebble: Pebble, images: dict[str, str]):
        self.project = project
        self.server = server
        self.pebble = pebble
        self.images = images
        self.up_output = ""
        self.deployed = False

    def require_deployed(self) -> None:
        if not self.deployed:
            pytest.skip("the first `pulumi up` did not finish")

    def docker(self, args: str, **kw):
        return self.server.sudo(f"docker {args}", **kw)

    def bootstrap_urns(self) -> list[str]:
        """URNs for `up --target`: the bootstrap steps, their parents and their provider."""
        res = self.project.run("preview", "--stack", "prod", "--json", timeout=900)
        urns = [s["urn"] for s in json.loads(res.stdout).get("steps", [])]
        wanted = {"pulumi:pulumi:Stack", "ai-meeting:stack:AiMeeting", "ai-meeting:bootstrap:Bootstrap"}

        def keep(urn: str) -> bool:
            kind, name = urn.split("::")[2].split("$")[-1], urn.split("::")[-1]
            return kind in wanted or kind.startswith("pulumi:providers:command") or (
                kind == "command:remote:Command" and name.startswith("bootstrap-"))

        return [u for u in urns if keep(u)]


def require_language_host_and_plugins(env: dict[str, str]) -> None:
    """The CLI alone is not enough: the program needs the Python language host and the four
    provider plugins at the versions requirements.txt pins (scripts/install-pulumi)."""
    import shutil

    missing = []
    if shutil.which("pulumi-language-python", path=env["PATH"]) is None:
        missing.append("pulumi-language-python")
    listed = subprocess.run(["pulumi", "plugin", "ls", "--json"], env=env, capture_output=True, text=True)
    have = {(p.get("name"), p.get("version")) for p in json.loads(listed.stdout or "[]")} if listed.returncode == 0 else set()
    pins = dict(
        line.split("==") for line in (REPO / "requirements.txt").read_text().splitlines()
        if line.startswith("pulumi-") and "==" in line
    )
    for name in ("command", "docker", "random", "tls"):
        version = pins.get(f"pulumi-{name}")
        if (name, version) not in have:
            missing.append(f"resource plugin {name} {version}")
    if missing:
        unavailable(f"the Pulumi toolchain is incomplete (scripts/install-pulumi): missing {', '.join(missing)}")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, request) -> Deployment:
    # The toolchain first: no server is started for tests that would skip anyway.
    env = require_engine()
    require_language_host_and_plugins(env)
    prod_server: ProdServer = request.getfixturevalue("bare_server")
    pebble: Pebble = request.getfixturevalue("pebble")
    images = local_images()
    if missing_images(images):
        build = subprocess.run([str(REPO / "scripts" / "build-local-images")], capture_output=True, text=True)
        if build.returncode != 0 or missing_images(images):
            unavailable(f"local images {missing_images(images)} could not be built:\n{build.stderr[-2000:]}")
    # Test setup, not bootstrap: the server must trust pebble's HTTPS endpoint, as it would
    # trust Let's Encrypt's through its CA store.
    prod_server.put(CA_ON_SERVER, pebble.ca_bundle.read_text())

    p = PulumiProject(tmp_path_factory.mktemp("prod-stack"), "prod", env, stack_file="Pulumi.prod.yaml")
    p.configure(
        target={"kind": "ssh", "host": prod_server.host, "port": prod_server.port, "user": prod_server.user},
        domains=[prod_server.domain],
        tls={
            "mode": "letsencrypt",
            "email": f"ops@{prod_server.domain}",
            "acme_server": pebble.directory_url,
            "acme_ca_bundle": CA_ON_SERVER,
        },
        images={"pull": False, **images},
        api={"replicas": 3, "migrate_command": ["ai-meeting-api", "migrate"]},
    )
    p.set_secret("target.private_key", prod_server.private_key)
    return Deployment(p, prod_server, pebble, images)


# --- 1. bare -> serving --------------------------------------------------------------------


def test_up_bootstraps_the_bare_server_and_deploys(deployment: Deployment) -> None:
    d, server = deployment, deployment.server
    assert server.ssh("command -v docker", check=False).code != 0, "server is not bare"
    preview = d.project.preview()
    assert preview.code == 0

    if _program_uploads_images(d):
        res = d.project.up()
        d.up_output = res.stdout + res.stderr
    else:
        # The program cannot put images on an offline server yet (see docs/prod-testing.md):
        # bootstrap first (only its steps), load the images, then the full `up`.
        urns = d.bootstrap_urns()
        assert any(u.split("::")[-1].startswith("bootstrap-") for u in urns), urns
        first = d.project.up(*[a for u in urns for a in ("--target", u)])
        server.load_images(*d.images.values())
        second = d.project.up()
        d.up_output = first.stdout + first.stderr + second.stdout + second.stderr
    d.deployed = True


def _program_uploads_images(d: Deployment) -> bool:
    from config.model import Images

    if "upload" in Images.model_fields:
        d.project.configure(images={"pull": False, "upload": True, **d.images})
        return True
    return False


# --- 2. the bootstrap, checked on the server (R1, R2, R3, R18) -----------------------------


def test_base_packages_and_timezone(deployment: Deployment) -> None:
    deployment.require_deployed()
    checks.base_packages_and_timezone(deployment.server)


def test_firewall_allows_only_ssh_http_https(deployment: Deployment) -> None:
    deployment.require_deployed()
    # target.port is the host side of the harness's port mapping (2222 -> 22); the program adds
    # it to the allowed set.
    checks.firewall_allows_only(deployment.server, {22, 80, 443}, also_allowed={deployment.server.port})


def test_nofile_limits_configured(deployment: Deployment) -> None:
    deployment.require_deployed()
    checks.nofile_configured(deployment.server)


def test_docker_engine_and_compose(deployment: Deployment) -> None:
    deployment.require_deployed()
    checks.docker_engine_and_compose(deployment.server)


def test_install_layout(deployment: Deployment) -> None:
    deployment.require_deployed()
    checks.install_layout(deployment.server)


def test_root_login_off_and_deploy_still_logs_in(deployment: Deployment) -> None:
    deployment.require_deployed()
    checks.root_login_off_deploy_still_in(deployment.server)


def test_fail2ban_and_unattended_upgrades(deployment: Deployment) -> None:
    deployment.require_deployed()
    checks.fail2ban_and_unattended_upgrades(deployment.server)


def test_preflight_warns_below_minimum(deployment: Deployment) -> None:
    deployment.require_deployed()
    # This machine has 2 CPUs (< 4): the preflight warns and `up` goes on (mode warn).
    assert re.search(r"preflight: .*WARN.*CPU", deployment.up_output), deployment.up_output[-3000:]
    report = deployment.project.outputs().get("preflight_report", "")
    assert "WARN: CPU" in report, report


# --- 3. the stack on the server --------------------------------------------------------------


def stack_containers(d: Deployment) -> list[dict]:
    ids = d.docker(f"ps -aq --filter network={PREFIX}-network").stdout.split()
    return json.loads(d.docker(f"inspect {' '.join(ids)}").stdout) if ids else []


def test_every_container_healthy_on_the_server(deployment: Deployment) -> None:
    deployment.require_deployed()
    containers = stack_containers(deployment)
    services = sorted(c["Config"]["Labels"].get("ai-meeting.service", "?") for c in containers
                      if not c["Name"].endswith(("-migrate", "-migrations")))
    assert services == SERVICES, services
    for c in containers:
        if c["State"]["Status"] == "exited" and c["State"]["ExitCode"] == 0:
            continue  # one-shot jobs (migrations, bucket creation)
        assert c["State"]["Health"]["Status"] == "healthy", f"{c['Name']}: {c['State']}"
        assert c["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"


def test_only_nginx_publishes_beyond_loopback(deployment: Deployment) -> None:
    deployment.require_deployed()
    for c in stack_containers(deployment):
        for bindings in (c["HostConfig"]["PortBindings"] or {}).values():
            for b in bindings:
                if c["Config"]["Labels"].get("ai-meeting.service") != "nginx":
                    assert b["HostIp"] == "127.0.0.1", f"{c['Name']} publishes {b}"


def https(d: Deployment, path: str, *, cadata: str | None = None) -> tuple[int, dict[str, str], str, dict]:
    """GET https://meet.test<path> through 127.0.0.1:<https_port>, verifying against pebble's root."""
    s = d.server
    ctx = ssl.create_default_context(cadata=cadata or d.pebble.issuer_root_pem())
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


def served_serial(d: Deployment) -> str:
    pem = ssl.get_server_certificate((d.server.host, d.server.https_port))  # no SNI needed: one site
    out = subprocess.run(["openssl", "x509", "-noout", "-serial", "-issuer"], input=pem,
                         capture_output=True, text=True, check=True).stdout
    return out


def test_site_serves_the_pebble_certificate(deployment: Deployment) -> None:
    deployment.require_deployed()
    status, headers, body, cert = https(deployment, "/")
    assert status == 200 and "AI Meeting" in body
    assert ("DNS", deployment.server.domain) in cert["subjectAltName"]
    issuer = dict(x[0] for x in cert["issuer"])
    assert issuer["commonName"].startswith("Pebble Intermediate CA"), issuer
    assert headers["strict-transport-security"].startswith("max-age=31536000")
    status, _, body, _ = https(deployment, "/health")
    assert status == 200 and body.strip() == "healthy"
    status, _, body, _ = https(deployment, "/api/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, _, body, _ = https(deployment, "/api/health/deps")
    assert status == 200, body


def test_http_redirects_to_https(deployment: Deployment) -> None:
    deployment.require_deployed()
    s = deployment.server
    with socket.create_connection((s.host, s.http_port), timeout=10) as c:
        c.sendall(f"GET /x?y=1 HTTP/1.1\r\nHost: {s.domain}\r\nConnection: close\r\n\r\n".encode())
        head = c.recv(65536).decode(errors="replace")
    assert head.split()[1] == "301", head
    assert re.search(rf"^Location: https://{re.escape(s.domain)}/x\?y=1\r?$", head, re.M | re.I), head


# --- 4. certificates: renewal scheduled, forced renewal reloads nginx without drops (R13) -----


def renewal_job(d: Deployment) -> tuple[dict[str, str], str]:
    """The scheduled renewal from /etc/cron.d/ai-meeting-certbot: its environment and command."""
    cron = d.server.sudo("cat /etc/cron.d/ai-meeting-certbot").stdout
    env, command = {}, ""
    for line in cron.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", line):
            key, _, value = line.partition("=")
            env[key] = value
        elif "certbot" in line:
            command = line.split(None, 6)[6]  # after the 5 schedule fields and the user
            assert line.split()[5] == "root", line
    assert command, cron
    return env, command


def test_renewal_is_scheduled(deployment: Deployment) -> None:
    deployment.require_deployed()
    env, command = renewal_job(deployment)
    assert "certbot renew" in command and "--deploy-hook" in command, command
    hook = re.search(r"--deploy-hook\s+(\S+)", command).group(1)  # type: ignore[union-attr]
    assert deployment.server.sudo(f"test -x {hook}", check=False).code == 0, f"deploy hook {hook} missing"
    # Renewals go to the configured ACME server, and trust its CA like the first issue did.
    assert f"--server {deployment.pebble.directory_url}" in command, command
    assert env.get("REQUESTS_CA_BUNDLE") == CA_ON_SERVER or f"REQUESTS_CA_BUNDLE={CA_ON_SERVER}" in command, \
        "the scheduled renewal does not trust tls.acme_ca_bundle: it would fail against this ACME server"


def test_forced_renewal_reloads_nginx_without_dropping_requests(deployment: Deployment) -> None:
    deployment.require_deployed()
    d = deployment
    before = served_serial(d)
    nginx = f"{PREFIX}-nginx"
    started = d.docker(f"inspect -f '{{{{.State.StartedAt}}}}' {nginx}").stdout.strip()
    root = d.pebble.issuer_root_pem()
    results: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                status = https(d, "/health", cadata=root)[0]
                results.append("ok" if status == 200 else f"status {status}")
            except Exception as exc:  # noqa: BLE001 - every failure is a dropped request
                results.append(repr(exc))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        # Exactly the scheduled job (its environment and command), forced.
        env, command = renewal_job(d)
        env.setdefault("REQUESTS_CA_BUNDLE", CA_ON_SERVER)
        command, _, _log = command.partition(" >>")
        assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        d.server.sudo(f"env -i {assignments} {command} --force-renewal", timeout=300)
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    after = served_serial(d)
    assert after != before, "nginx still serves the old certificate after the renewal"
    assert d.docker(f"inspect -f '{{{{.State.StartedAt}}}}' {nginx}").stdout.strip() == started, \
        "nginx was restarted instead of reloaded"
    failures = [r for r in results if r != "ok"]
    assert results and not failures, f"{len(failures)} of {len(results)} requests failed: {failures[:5]}"


# --- 5. backups and restore (R16) ------------------------------------------------------------


def _psql(d: Deployment, sql: str) -> str:
    return d.docker(
        f"exec {PREFIX}-postgres psql -U ai_meeting -d ai_meeting -tAc {shlex.quote(sql)}"
    ).stdout.strip()


def _redis(d: Deployment, *args: str) -> str:
    # The container has the password in REDISCLI_AUTH (as the backup script relies on).
    return d.docker(f"exec {PREFIX}-redis redis-cli --no-auth-warning {' '.join(map(shlex.quote, args))}").stdout.strip()


def _mc(d: Deployment, args: str, stdin: str | None = None) -> str:
    minio = d.project.outputs(show_secrets=True)["minio"]
    alias = f"http://{minio['access_key']}:{minio['secret_key']}@127.0.0.1:9000"
    return d.docker(
        f"exec -i -e MC_HOST_t={shlex.quote(alias)} {PREFIX}-minio mc {args}", input=stdin
    ).stdout


def test_backup_schedule_installed(deployment: Deployment) -> None:
    deployment.require_deployed()
    cron = deployment.server.sudo("cat /etc/cron.d/ai-meeting-backup").stdout
    assert re.search(r"^0 2 \* \* \* root .*backup", cron, re.M), cron
    script = deployment.server.sudo(f"cat {INSTALL}/bin/backup.sh").stdout
    assert "RETENTION_DAYS=30" in script


def test_backup_destroy_restore_round_trip(deployment: Deployment) -> None:
    deployment.require_deployed()
    d = deployment
    bucket = d.project.outputs()["minio"]["bucket"]
    _psql(d, "CREATE TABLE IF NOT EXISTS prod_test (id int PRIMARY KEY, v text)")
    _psql(d, "INSERT INTO prod_test SELECT g, 'row-' || g FROM generate_series(1, 500) g ON CONFLICT DO NOTHING")
    assert _redis(d, "SET", "prod-test:key", "kept-value") == "OK"
    _mc(d, f"pipe t/{bucket}/prod-test/recording.bin", stdin="recording-bytes")
    # An expired backup (40 days old) must be pruned by the next successful run.
    d.server.sudo("mkdir -p /opt/ai-meeting/backups/20000101_000000 && "
                  "touch -d '40 days ago' /opt/ai-meeting/backups/20000101_000000")

    d.server.sudo(f"{INSTALL}/bin/backup.sh", timeout=600)
    stamp = d.server.sudo("ls -1 /opt/ai-meeting/backups | grep -E '^[0-9]{8}_[0-9]{6}$' | sort | tail -1").stdout.strip()
    files = d.server.sudo(f"ls /opt/ai-meeting/backups/{stamp}").stdout.split()
    for f in ("postgres.sql.gz", "redis-dump.rdb", "minio-data.tar.gz", "config.tar.gz"):
        assert f in files, f"{f} missing from backup {stamp}: {files}"
    assert d.server.sudo("test -e /opt/ai-meeting/backups/20000101_000000", check=False).code != 0, \
        "a 40-day-old backup survived the retention of 30 days"

    # Destroy the data.
    _psql(d, "DROP TABLE prod_test")
    _redis(d, "FLUSHALL")
    _mc(d, f"rm t/{bucket}/prod-test/recording.bin")
    assert _redis(d, "GET", "prod-test:key") == ""

    d.server.sudo(f"{INSTALL}/bin/restore.sh {stamp} --yes", timeout=900)

    assert _psql(d, "SELECT count(*) FROM prod_test") == "500"
    assert _redis(d, "GET", "prod-test:key") == "kept-value"
    assert _mc(d, f"cat t/{bucket}/prod-test/recording.bin") == "recording-bytes"
    status, _, _, _ = https(d, "/api/health/deps")
    assert status == 200, "the API does not reach its data stores after the restore"


# --- 6. idempotence ---------------------------------------------------------------------------


def test_second_up_changes_nothing(deployment: Deployment) -> None:
    deployment.require_deployed()
    p = deployment.project
    res = p.preview("--expect-no-changes", "--diff", check=False)
    assert res.code == 0, f"a second preview wants changes:\n{res.stdout[-4000:]}"
    up = p.up()
    changes = _changes(up.stdout)
    assert not changes, f"second up changed {changes}:\n{up.stdout[-3000:]}"


def test_changing_one_bootstrap_script_reruns_only_that_step(deployment: Deployment) -> None:
    deployment.require_deployed()
    p = deployment.project
    p.configure(bootstrap={"min_cpus": 3})  # changes the preflight script only
    res = p.run("preview", "--stack", "prod", "--json", timeout=900)
    changed = {s["urn"].split("::")[-1]: s["op"] for s in json.loads(res.stdout)["steps"] if s["op"] != "same"}
    assert set(changed) <= {"bootstrap-preflight", "ai-meeting"}, changed
    assert "bootstrap-preflight" in changed, changed
    p.up()


def _changes(up_output: str) -> dict[str, int]:
    """Resource changes from the summary `pulumi up` prints ("Resources: + 1 created ...")."""
    summary = up_output[up_output.rfind("Resources:"):]
    found = re.findall(r"^\s*[-+~]*\s*(\d+)\s+(created|updated|replaced|deleted|to \w+)", summary, re.M)
    return {op: int(n) for n, op in found}


# --- 7. failures say what failed and where ---------------------------------------------------


def test_a_failed_bootstrap_step_stops_up_and_the_fixed_up_finishes(deployment: Deployment) -> None:
    deployment.require_deployed()
    p = deployment.project
    p.configure(bootstrap={"preflight_mode": "fail"})  # this 2-CPU server is below the minimum
    res = p.run("up", "--yes", "--stack", "prod", "--skip-preview", check=False, timeout=900)
    out = res.stdout + res.stderr
    assert res.code != 0, "up passed with a failing preflight"
    assert "bootstrap-preflight" in out and re.search(r"\[bootstrap:preflight\] (ERROR|FAILED)", out), out[-3000:]
    assert "CPU" in out
    p.configure(bootstrap={"preflight_mode": "warn"})
    p.up()
    assert p.preview("--expect-no-changes", check=False).code == 0


def test_a_bad_ssh_key_fails_clearly_and_the_next_up_finishes(deployment: Deployment, tmp_path: Path) -> None:
    deployment.require_deployed()
    p, s = deployment.project, deployment.server
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    p.set_secret("target.private_key", stranger.read_text())
    p.configure(bootstrap={"min_cpus": 2})  # a step must connect
    try:
        res = p.run("up", "--yes", "--stack", "prod", "--skip-preview", check=False, timeout=900)
        out = res.stdout + res.stderr
        assert res.code != 0, "up succeeded with a key the server does not know"
        assert re.search(r"unable to authenticate|permission denied|handshake failed", out, re.I), out[-3000:]
        assert re.search(r"bootstrap-\w+|docker", out), f"the failure does not say where:\n{out[-3000:]}"
        assert s.private_key not in out and stranger.read_text() not in out, "a private key was printed"
    finally:
        p.set_secret("target.private_key", s.private_key)
    p.up()
    res = p.preview("--expect-no-changes", check=False)
    assert res.code == 0, res.stdout[-3000:]


def test_an_unreachable_host_fails_clearly(deployment: Deployment) -> None:
    deployment.require_deployed()
    p, s = deployment.project, deployment.server
    target = {"kind": "ssh", "host": s.host, "port": 2299, "user": s.user}
    doc = yaml.safe_load((p.dir / "Pulumi.prod.yaml").read_text())
    key = doc["config"]["ai-meeting:target"]["private_key"]
    p.configure(target={**target, "private_key": key}, bootstrap={"min_cpus": 1})
    try:
        res = p.run("up", "--yes", "--stack", "prod", "--skip-preview", check=False, timeout=900)
        out = res.stdout + res.stderr
        assert res.code != 0
        assert re.search(r"connection refused|dial tcp|unable to connect", out, re.I), out[-3000:]
    finally:
        p.configure(target={"kind": "ssh", "host": s.host, "port": s.port, "user": s.user, "private_key": key})
    p.up()
