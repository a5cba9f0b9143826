"""Maintenance mode through the real engine on a dev stack of its own (README: Maintenance mode):
off -> on -> off by `pulumi config set` + `pulumi up`, each switch an nginx reload. The preview
of the switch replaces no container, nginx keeps its container and start time, the site and
/api/ answer 503 with Retry-After while /health and /api/health answer, an allow-listed client
gets through, and after switching off the stack is converged."""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.e2e import netcheck
from tests.e2e.engine import PulumiProject, require_engine, require_local_images

pytestmark = [pytest.mark.e2e, pytest.mark.reliability, pytest.mark.timeout(1800)]

STACK = "d2-maintenance"
PREFIX = "aim-d2"
HTTP, HTTPS = 18401, 18402
LOOPBACK = {"postgres": 18403, "redis": 18404, "minio": 18405, "minio_console": 18406, "api": 18407}
OVERRIDES = {
    "name_prefix": PREFIX,
    "nginx": {"bind_address": "127.0.0.1", "http_port": HTTP, "https_port": HTTPS},
    "loopback_ports": LOOPBACK,
    "api": {"replicas": 1, "migrate_command": ["ai-meeting-api", "migrate"], "start_timeout": 60},
}
NGINX = f"{PREFIX}-nginx"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def stack_containers() -> dict[str, tuple[str, str]]:
    """name -> (id, start time) of every container on the stack's network."""
    ids = docker("ps", "-aq", "--filter", f"network={PREFIX}-network").stdout.split()
    return {c["Name"].lstrip("/"): (c["Id"], c["State"]["StartedAt"]) for c in json.loads(docker("inspect", *ids).stdout)} if ids else {}


def replaced_containers(p: PulumiProject) -> list[str]:
    """Containers the preview would replace or delete (JSON steps: op replace/create-replacement...);
    the switch itself (the nginx-maintenance-reload command) must be among the changes."""
    steps = json.loads(p.preview("--json").stdout)["steps"]
    changed = {s["urn"].rsplit("::", 1)[1]: s["op"] for s in steps if s["op"] not in ("same", "read", "refresh")}
    assert changed.get("nginx-maintenance-reload") in ("replace", "create-replacement", "update"), changed
    return [s["urn"] for s in steps
            if "docker:index/container:Container" in s["urn"] and s["op"] not in ("same", "update", "read", "refresh")]


def from_inside_nginx(path: str) -> str:
    """An allow-listed client: nginx's own loopback (127.0.0.1), over HTTPS."""
    url = f"https://127.0.0.1{path}"
    r = docker("exec", NGINX, "sh", "-c",
               f"curl -sk -o /dev/null -w '%{{http_code}}' {url} || wget -S --no-check-certificate -O /dev/null {url} 2>&1 | awk '/HTTP\\//{{c=$2}} END{{print c}}'",
               check=False)
    return r.stdout.strip()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    env = require_engine()
    require_local_images()
    p = PulumiProject(tmp_path_factory.mktemp("d2-maintenance"), STACK, env, stack_file="Pulumi.dev.yaml")
    p.configure(**OVERRIDES)
    p.up()
    yield p
    p.run("destroy", "--yes", "--stack", STACK, "--skip-preview", check=False, timeout=900)


def test_maintenance_on_and_off_by_up_with_a_reload_only(project, record):
    p = project
    assert netcheck.https_get(HTTPS, "/")[0] == 200
    before = stack_containers()
    assert NGINX in before, sorted(before)

    # on, with nginx's own loopback allow-listed
    p.config_set("maintenance.enabled", "true")
    p.config_set("maintenance.allow[0]", "127.0.0.1")
    p.config_set("maintenance.retry_after", "900")
    assert replaced_containers(p) == [], "switching maintenance on must not replace a container"
    started = time.monotonic()
    p.up()
    on_seconds = time.monotonic() - started
    assert stack_containers() == before, "a container was replaced or restarted by switching maintenance on"
    for path in ("/", "/meetings/42", "/api/x"):
        status, headers, body = netcheck.https_get(HTTPS, path)
        assert status == 503, (path, status, body[:200])
        assert headers.get("retry-after") == "900", (path, headers)
        assert "Down for maintenance" in body
        assert headers["strict-transport-security"].startswith("max-age=")
    status, _, body = netcheck.https_get(HTTPS, "/health")
    assert status == 200 and body.strip() == "healthy"
    status, _, body = netcheck.https_get(HTTPS, "/api/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert netcheck.websocket_echo(HTTPS, "/ws/", "hello")[0] == 503
    assert from_inside_nginx("/api/x") != "503" and from_inside_nginx("/") == "200"
    assert docker("inspect", "-f", "{{.State.Health.Status}}", NGINX).stdout.strip() == "healthy"

    # off again
    p.config_set("maintenance.enabled", "false")
    assert replaced_containers(p) == [], "switching maintenance off must not replace a container"
    started = time.monotonic()
    p.up()
    off_seconds = time.monotonic() - started
    assert stack_containers() == before, "a container was replaced or restarted by switching maintenance off"
    status, headers, _ = netcheck.https_get(HTTPS, "/")
    assert status == 200 and "retry-after" not in headers
    status, headers, _ = netcheck.https_get(HTTPS, "/api/health")
    assert status == 200
    assert netcheck.websocket_echo(HTTPS, "/ws/", "hello") == (101, "hello")

    res = p.preview("--expect-no-changes", "--diff", check=False)
    assert res.code == 0, f"the stack has not converged after switching maintenance off:\n{res.stdout[-5000:]}"
    record("dev: maintenance on by `up` (503 + Retry-After, health 200, nginx container and start time unchanged)",
           f"{on_seconds:.0f} s", "no container replaced", True)
    record("dev: maintenance off by `up`, then `preview --expect-no-changes`", f"{off_seconds:.0f} s", "converged", True)
