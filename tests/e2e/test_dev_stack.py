"""The dev stack for real on the local Docker engine, checked from the outside.

Two ways to bring it up, same checks:
- `engine`: the real Pulumi engine (`pulumi up` with the local backend). Marked `e2e`; it
  needs the Python language host and provider plugins, which the Go module mirror does not
  serve yet (issue 3), so CI leaves this tier out (README: Tests).
- `declared`: the program's declarations applied to Docker by tests/e2e/docker_applier.py
  (no engine). Marked `docker`; runs in CI. It proves what the program declares works:
  images, healthchecks, rendered nginx config, secrets, migrations, scripts.

Engine-only behaviour (a no-op second preview, scaling by `up`, destroy from state) is in the
`engine` tests at the end.
"""

from __future__ import annotations

import json
import ssl
import subprocess
from dataclasses import dataclass
from typing import Callable

import pytest
import yaml

from config import validate_config
from tests.e2e import netcheck
from tests.e2e.docker_applier import DockerApplier, apply_stack
from tests.e2e.engine import REPO, PulumiProject, require_engine, unavailable

PREFIX = "aim-e2e"
HTTP, HTTPS = 18080, 18443
LOOPBACK = {"postgres": 15432, "redis": 16379, "minio": 19000, "minio_console": 19001, "api": 13000}
OVERRIDES = {
    "name_prefix": PREFIX,
    "nginx": {"bind_address": "0.0.0.0", "http_port": HTTP, "https_port": HTTPS},
    "loopback_ports": LOOPBACK,
}


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def stack_containers() -> list[dict]:
    ids = docker("ps", "-aq", "--filter", f"network={PREFIX}-network").stdout.split()
    return json.loads(docker("inspect", *ids).stdout) if ids else []


def require_docker_and_images() -> None:
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        unavailable("no Docker engine answers (run scripts/start-dockerd)")
    build = subprocess.run([str(REPO / "scripts" / "build-local-images")], capture_output=True, text=True)
    if build.returncode != 0:
        unavailable(f"local images could not be built:\n{build.stdout[-2000:]}\n{build.stderr[-2000:]}")


def dev_config(**extra: object):
    doc = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())["config"]
    raw = {k.split(":", 1)[1]: v for k, v in doc.items()}
    raw.update(OVERRIDES, **extra)
    return validate_config({"environment": "dev", **raw}, "dev")


@dataclass
class Deployment:
    kind: str
    outputs: Callable[[], dict]  # with secrets in clear
    listening_before: set[int]
    project: PulumiProject | None = None


@pytest.fixture(scope="module")
def engine_project(tmp_path_factory):
    env = require_engine()
    require_docker_and_images()
    before = netcheck.public_listeners()
    p = PulumiProject(tmp_path_factory.mktemp("dev-stack"), "dev", env, stack_file="Pulumi.dev.yaml")
    p.configure(**OVERRIDES)
    p.preview()
    p.up()
    yield p, before
    # Leave nothing behind even when a test failed half-way.
    p.run("destroy", "--yes", "--stack", "dev", "--skip-preview", check=False, timeout=900)


@pytest.fixture(
    scope="module",
    params=[pytest.param("declared", marks=pytest.mark.docker), pytest.param("engine", marks=pytest.mark.e2e)],
)
def deployed(request, tmp_path_factory, monkeypatch_module):
    if request.param == "engine":
        p, before = request.getfixturevalue("engine_project")
        yield Deployment("engine", lambda: p.outputs(show_secrets=True), before, p)
        return
    require_docker_and_images()
    before = netcheck.public_listeners()
    work = tmp_path_factory.mktemp("declared")
    monkeypatch_module.setenv("AI_MEETING_CACHE", str(work / "cache"))
    applier = DockerApplier(workdir=work)
    try:
        outputs = apply_stack(dev_config(), applier, "dev")
        yield Deployment("declared", lambda: outputs, before)
    finally:
        applier.destroy()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_up_brings_every_container_to_healthy(deployed):
    containers = stack_containers()
    services = sorted(c["Config"]["Labels"]["ai-meeting.service"] for c in containers)
    assert services == ["api", "minio", "nginx", "postgres", "redis", "web"], services
    for c in containers:
        assert c["State"]["Health"]["Status"] == "healthy", f"{c['Name']}: {c['State']}"
        assert c["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        assert c["HostConfig"]["Memory"] > 0 and c["HostConfig"]["NanoCpus"] > 0


def test_http_redirects_to_https(deployed):
    status, headers = netcheck.http_get(HTTP, "/some/page?x=1")
    assert status == 301
    assert headers["location"] == f"https://localhost:{HTTPS}/some/page?x=1"


def test_https_serves_the_web_app_with_security_headers(deployed):
    status, headers, body = netcheck.https_get(HTTPS, "/")
    assert status == 200 and "AI Meeting" in body
    assert headers["x-frame-options"] == "SAMEORIGIN"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-xss-protection"] == "1; mode=block"
    assert headers["strict-transport-security"].startswith("max-age=31536000")


def test_only_tls_1_2_and_1_3(deployed):
    assert netcheck.tls_handshake_ok(HTTPS, ssl.TLSVersion.TLSv1_2)
    assert netcheck.tls_handshake_ok(HTTPS, ssl.TLSVersion.TLSv1_3)
    assert not netcheck.tls_handshake_ok(HTTPS, ssl.TLSVersion.TLSv1_1)
    assert not netcheck.tls_handshake_ok(HTTPS, ssl.TLSVersion.TLSv1)


def test_health_endpoints_answer_through_nginx(deployed):
    status, _, body = netcheck.https_get(HTTPS, "/health")
    assert status == 200 and body.strip() == "healthy"
    status, _, body = netcheck.https_get(HTTPS, "/api/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, _, body = netcheck.https_get(HTTPS, "/api/health/deps")
    assert status == 200, body  # the API reaches postgres, redis and minio with the generated secrets


def test_websocket_upgrades_and_echoes(deployed):
    status, echoed = netcheck.websocket_echo(HTTPS, "/ws/", "hello meeting")
    assert status == 101 and echoed == "hello meeting"


def test_postgres_takes_the_generated_password_only(deployed):
    url = deployed.outputs()["database_url"]
    password = url.split(":")[2].split("@")[0]

    def psql(pw: str, sql: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(LOOPBACK["postgres"]), "-U", "ai_meeting", "-d", "ai_meeting", "-tAc", sql],
            env={"PGPASSWORD": pw, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
        )

    ok = psql(password, "SELECT uuid_generate_v4() IS NOT NULL, current_setting('timezone')")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "t|Asia/Shanghai"
    bad = psql("wrong-password", "SELECT 1")
    assert bad.returncode != 0 and "password authentication failed" in bad.stderr
    ext = psql(password, "SELECT count(*) FROM pg_extension WHERE extname IN ('uuid-ossp','pg_stat_statements')")
    assert ext.stdout.strip() == "2"
    migrated = psql(password, "SELECT count(*) > 0 FROM schema_migrations")
    assert migrated.stdout.strip() == "t", f"migrations did not run: {migrated.stderr}"


def test_redis_refuses_commands_without_the_password(deployed):
    url = deployed.outputs()["redis_url"]
    password = url.split(":")[2].split("@")[0]
    cli = ["redis-cli", "-h", "127.0.0.1", "-p", str(LOOPBACK["redis"])]
    anon = subprocess.run([*cli, "SET", "k", "v"], capture_output=True, text=True)
    assert "NOAUTH" in anon.stdout + anon.stderr
    authed = subprocess.run([*cli, "--no-auth-warning", "-a", password, "CONFIG", "GET", "maxmemory-policy"], capture_output=True, text=True)
    assert "allkeys-lru" in authed.stdout


def test_bucket_exists_and_objects_round_trip(deployed):
    minio = deployed.outputs()["minio"]
    container = f"{PREFIX}-minio"

    def mc(secret: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        alias = f"http://{minio['access_key']}:{secret}@127.0.0.1:9000"
        return subprocess.run(
            ["docker", "exec", "-i", "-e", f"MC_HOST_t={alias}", container, "mc", *args],
            input=stdin, capture_output=True, text=True,
        )

    assert mc(minio["secret_key"], "ls", f"t/{minio['bucket']}").returncode == 0
    assert mc(minio["secret_key"], "pipe", f"t/{minio['bucket']}/e2e.txt", stdin="recording-bytes").returncode == 0
    got = mc(minio["secret_key"], "cat", f"t/{minio['bucket']}/e2e.txt")
    assert got.stdout == "recording-bytes"
    assert mc("not-the-secret", "ls", f"t/{minio['bucket']}").returncode != 0


def test_only_nginx_listens_beyond_loopback(deployed):
    new = netcheck.public_listeners() - deployed.listening_before
    assert new == {HTTP, HTTPS}, f"ports listening beyond 127.0.0.1 besides nginx: {sorted(new - {HTTP, HTTPS})}"


@pytest.mark.e2e
def test_second_preview_changes_nothing(engine_project):
    project, _ = engine_project
    res = project.preview("--expect-no-changes", "--diff", check=False)
    assert res.code == 0, f"a second preview wants changes:\n{res.stdout[-4000:]}"


def spread_over_replicas(https_port: int = HTTPS) -> set[str]:
    seen = set()
    for _ in range(45):
        status, _, body = netcheck.https_get(https_port, "/api/whoami")
        assert status == 200
        seen.add(body.strip())
    return seen


@pytest.mark.e2e
def test_scaling_to_three_replicas_spreads_requests(engine_project):
    project, _ = engine_project
    project.configure(api={"replicas": 3, "migrate_command": ["ai-meeting-api", "migrate"]})
    project.up()
    assert project.outputs()["api_replicas"] == 3
    assert len(spread_over_replicas()) == 3


@pytest.mark.docker
def test_three_declared_replicas_share_the_load(tmp_path, monkeypatch):
    require_docker_and_images()
    monkeypatch.setenv("AI_MEETING_CACHE", str(tmp_path / "cache"))
    applier = DockerApplier(workdir=tmp_path)
    try:
        # Its own names and ports: the module's one-replica deployment is still up.
        cfg = dev_config(
            name_prefix=f"{PREFIX}3",
            nginx={"bind_address": "127.0.0.1", "http_port": HTTP + 10000, "https_port": HTTPS + 10000},
            loopback_ports={k: None for k in LOOPBACK},
            api={"replicas": 3, "migrate_command": ["ai-meeting-api", "migrate"]},
        )
        outputs = apply_stack(cfg, applier, "dev")
        assert outputs["api_replicas"] == 3
        seen = spread_over_replicas(HTTPS + 10000)
        assert len(seen) == 3, f"nginx sent requests to {seen}"
    finally:
        applier.destroy()


@pytest.mark.e2e
def test_destroy_removes_everything(engine_project):
    project, _ = engine_project
    project.destroy()
    assert stack_containers() == []
    assert docker("network", "ls", "-q", "--filter", f"name={PREFIX}-network").stdout.strip() == ""
    assert docker("volume", "ls", "-q", "--filter", f"name={PREFIX}-").stdout.strip() == ""
