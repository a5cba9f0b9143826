"""The dev stack through the real engine: `pulumi up` of the program on the local Docker
engine, checked from the outside, then changed the ways operators change it.

One stack for the whole module. The read-only checks run first and share it; the tests after
them change it in file order (refresh, scale, rollout, a bad release, a dockerd restart) and
the last one destroys it. Every change is made under a load loop through nginx and must drop
no request; every change ends with `pulumi preview --expect-no-changes`.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from dataclasses import dataclass

import pytest

from tests.e2e import netcheck
from tests.e2e.engine import REPO, PulumiProject, Result, require_engine, require_local_images
from tests.e2e.load import LoadLoop
from config.model import Hardening
from tests.support import cis
from tests.support.docker import NEVER_HEALTHY, build_never_healthy_image

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

PREFIX = "aim-e2e"
HTTP, HTTPS = 18080, 18443
LOOPBACK = {"postgres": 15432, "redis": 16379, "minio": 19000, "minio_console": 19001, "api": 13000}
# api.start_timeout stays at its default (180 s): a never-healthy release must fail when its
# healthcheck gives up (55 s), and the test below would see the 180 s if it did not.
API = {"migrate_command": ["ai-meeting-api", "migrate"]}
OVERRIDES = {
    "name_prefix": PREFIX,
    "nginx": {"bind_address": "0.0.0.0", "http_port": HTTP, "https_port": HTTPS},
    "loopback_ports": LOOPBACK,
    "api": {"replicas": 1, **API},
}
DEMO_1, DEMO_2 = "ai-meeting-local/api:demo-1", "ai-meeting-local/api:demo-2"
DATA_SERVICES = ("postgres", "redis", "minio")


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def stack_containers() -> list[dict]:
    ids = docker("ps", "-aq", "--filter", f"network={PREFIX}-network").stdout.split()
    return json.loads(docker("inspect", *ids).stdout) if ids else []


def by_service(service: str) -> list[dict]:
    return [c for c in stack_containers() if c["Config"]["Labels"].get("ai-meeting.service") == service]


def identity(service: str) -> list[tuple[str, str]]:
    """(container id, start time): a restart or a replacement changes it."""
    return sorted((c["Id"], c["State"]["StartedAt"]) for c in by_service(service))


def api_version(body: str) -> str:
    try:
        return json.loads(body).get("version", "?")
    except ValueError:
        return "?"


@dataclass
class Deployed:
    project: PulumiProject
    listening_before: set[int]
    first_up: Result
    first_up_seconds: float

    def outputs(self) -> dict:
        return self.project.outputs(show_secrets=True)

    def set_api(self, **api: object) -> None:
        self.project.configure(api={**API, **api})

    def set_api_image(self, ref: str) -> None:
        doc = self.project.stack_config()
        images = dict(doc["ai-meeting:images"])
        images["api"] = ref
        self.project.configure(images=images)

    def assert_converged(self) -> None:
        res = self.project.preview("--expect-no-changes", "--diff", check=False)
        assert res.code == 0, f"the stack has not converged: a preview wants changes\n{res.stdout[-5000:]}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    env = require_engine()
    require_local_images()
    before = netcheck.public_listeners()
    p = PulumiProject(tmp_path_factory.mktemp("dev-stack"), "dev", env, stack_file="Pulumi.dev.yaml")
    p.configure(**OVERRIDES)
    # The policy pack judges the preview and again the up, with every value known.
    p.preview("--policy-pack", str(REPO / "policy"))
    started = time.monotonic()
    first = p.up("--policy-pack", str(REPO / "policy"))
    yield Deployed(p, before, first, time.monotonic() - started)
    # Leave nothing behind even when a test failed half-way (a no-op after the destroy test).
    p.run("destroy", "--yes", "--stack", "dev", "--skip-preview", check=False, timeout=900)


# ---- read-only checks of the deployed stack ---------------------------------------------------


def test_up_brings_every_container_to_healthy(stack):
    containers = stack_containers()
    services = sorted(c["Config"]["Labels"]["ai-meeting.service"] for c in containers)
    assert services == ["api", "minio", "nginx", "postgres", "redis", "web"], services
    for c in containers:
        assert c["State"]["Health"]["Status"] == "healthy", f"{c['Name']}: {c['State']}"
        assert c["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        assert c["HostConfig"]["Memory"] > 0 and c["HostConfig"]["NanoCpus"] > 0
        assert c["HostConfig"]["MemorySwap"] == c["HostConfig"]["Memory"], f"{c['Name']}: swap on top of the limit"
    print(f"first up: {stack.first_up_seconds:.0f} s")


def test_http_redirects_to_https(stack):
    status, headers = netcheck.http_get(HTTP, "/some/page?x=1")
    assert status == 301
    assert headers["location"] == f"https://localhost:{HTTPS}/some/page?x=1"


def test_https_serves_the_web_app_with_security_headers(stack):
    status, headers, body = netcheck.https_get(HTTPS, "/")
    assert status == 200 and "AI Meeting" in body
    assert headers["x-frame-options"] == "SAMEORIGIN"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-xss-protection"] == "1; mode=block"
    assert headers["strict-transport-security"].startswith("max-age=31536000")


def test_only_tls_1_2_and_1_3(stack, tmp_path):
    assert netcheck.tls_handshake_ok(HTTPS, ssl.TLSVersion.TLSv1_2)
    assert netcheck.tls_handshake_ok(HTTPS, ssl.TLSVersion.TLSv1_3)
    old = (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1)
    # Positive control: the same check completes a handshake in each old version with a server
    # that offers it, so its "refused" below is nginx's refusal, not this client's.
    for version in old:
        with netcheck.tls_control_server(version, tmp_path) as port:
            assert netcheck.tls_handshake_ok(port, version), f"the checker cannot do {version.name} at all"
    for version in old:
        assert not netcheck.tls_handshake_ok(HTTPS, version), f"nginx accepted {version.name}"


def test_health_endpoints_answer_through_nginx(stack):
    status, _, body = netcheck.https_get(HTTPS, "/health")
    assert status == 200 and body.strip() == "healthy"
    status, _, body = netcheck.https_get(HTTPS, "/api/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, _, body = netcheck.https_get(HTTPS, "/api/health/deps")
    assert status == 200, body  # the API reaches postgres, redis and minio with the generated secrets


def test_api_answers_on_its_loopback_port(stack):
    """127.0.0.1:<loopback_ports.api> reaches the API (through nginx: replicas publish nothing)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{LOOPBACK['api']}/health", timeout=5) as resp:
        assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"
    assert all(not c["HostConfig"]["PortBindings"] for c in by_service("api"))


def test_websocket_upgrades_and_echoes(stack):
    status, echoed = netcheck.websocket_echo(HTTPS, "/ws/", "hello meeting")
    assert status == 101 and echoed == "hello meeting"


def test_postgres_takes_the_generated_password_only(stack):
    url = stack.outputs()["database_url"]
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


def test_redis_refuses_commands_without_the_password(stack):
    url = stack.outputs()["redis_url"]
    password = url.split(":")[2].split("@")[0]
    cli = ["redis-cli", "-h", "127.0.0.1", "-p", str(LOOPBACK["redis"])]
    anon = subprocess.run([*cli, "SET", "k", "v"], capture_output=True, text=True)
    assert "NOAUTH" in anon.stdout + anon.stderr
    authed = subprocess.run([*cli, "--no-auth-warning", "-a", password, "CONFIG", "GET", "maxmemory-policy"], capture_output=True, text=True)
    assert "allkeys-lru" in authed.stdout


def test_bucket_exists_and_objects_round_trip(stack):
    minio = stack.outputs()["minio"]
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


def test_only_nginx_listens_beyond_loopback(stack):
    new = netcheck.public_listeners() - stack.listening_before
    assert new == {HTTP, HTTPS}, f"ports listening beyond 127.0.0.1 besides nginx: {sorted(new - {HTTP, HTTPS})}"


def test_every_container_holds_the_cis_runtime_items(stack, record):
    """README: Hardening, read from the running containers (tests/support/cis.py)."""
    promised = cis.promises(Hardening().model_dump())
    containers = stack_containers()
    bad = cis.check_containers(containers, lambda cid: docker("exec", cid, "cat", "/proc/1/status").stdout, promised)
    record.figure("dev: containers checked against the CIS Docker Benchmark's runtime items (section 5, 4.1)",
                  f"{len(containers)} containers, {len(bad)} findings")
    assert len(containers) >= 6 and not bad, "\n".join(bad)


def test_outputs_and_secrets_in_state(stack):
    plain = stack.project.outputs()
    assert plain["public_url"] == f"https://localhost:{HTTPS}" and plain["api_replicas"] == 1
    assert plain["database_url"] == "[secret]" and plain["minio"]["secret_key"] == "[secret]"
    password = stack.outputs()["database_url"].split(":")[2].split("@")[0]
    exported = stack.project.run("stack", "export", "--stack", "dev").stdout
    assert password not in exported, "a generated password is in plain text in the state"
    assert password not in stack.first_up.stdout + stack.first_up.stderr


# ---- convergence ------------------------------------------------------------------------------


def test_second_preview_changes_nothing(stack):
    stack.assert_converged()


def test_refresh_finds_no_drift_and_the_stack_stays_converged(stack):
    res = stack.project.run("refresh", "--yes", "--stack", "dev", "--skip-preview", "--expect-no-changes", check=False)
    assert res.code == 0, f"refresh found differences between state and the engine:\n{res.stdout[-5000:]}"
    stack.assert_converged()


# ---- changes under load -----------------------------------------------------------------------


def test_scale_1_to_3_to_1_drops_no_request(stack):
    nginx_before = identity("nginx")
    data_before = {s: identity(s) for s in DATA_SERVICES}
    stack.set_api(replicas=3)
    with LoadLoop(HTTPS, "/api/health") as load:
        stack.project.up()
    assert not load.result.failed, load.result.summary()
    assert len(by_service("api")) == 3
    seen = set()
    for _ in range(45):
        status, _, body = netcheck.https_get(HTTPS, "/api/whoami")
        assert status == 200
        seen.add(body.strip())
    assert len(seen) == 3, f"nginx sent requests to {seen}"
    assert stack.project.outputs()["api_replicas"] == 3
    stack.assert_converged()

    stack.set_api(replicas=1)
    with LoadLoop(HTTPS, "/api/health") as load:
        stack.project.up()
    assert not load.result.failed, load.result.summary()
    assert len(by_service("api")) == 1
    assert identity("nginx") == nginx_before, "scaling restarted nginx"
    assert {s: identity(s) for s in DATA_SERVICES} == data_before, "scaling restarted a data service"
    print(f"scale 1->3->1 under load: {load.result.summary()}")
    stack.assert_converged()


@pytest.mark.parametrize("image, version", [(DEMO_2, "demo-2"), (DEMO_1, "demo-1")], ids=["to-demo-2", "back-to-demo-1"])
def test_api_rollout_drops_no_request(stack, image, version):
    stack.set_api(replicas=2)
    stack.project.up()  # two replicas before the rollout (a no-op the second time)
    data_before = {s: identity(s) for s in (*DATA_SERVICES, "nginx")}
    stack.set_api_image(image)
    with LoadLoop(HTTPS, "/api/health", body_key=api_version) as load:
        stack.project.up()
    assert not load.result.failed, load.result.summary()
    assert load.result.bodies.get(version), f"no request reached {version} during the rollout: {load.result.bodies}"
    for _ in range(10):
        assert api_version(netcheck.https_get(HTTPS, "/api/health")[2]) == version
    assert {c["Config"]["Image"] for c in by_service("api")} == {docker("image", "inspect", "-f", "{{.Id}}", image).stdout.strip()}
    assert {s: identity(s) for s in (*DATA_SERVICES, "nginx")} == data_before, "the rollout restarted more than the API"
    print(f"rollout to {version}: {load.result.summary()}, versions seen {load.result.bodies}")
    stack.assert_converged()


def test_rollback_returns_to_the_previous_release_under_load(stack, record):
    """README, Rollback: `scripts/rollback dev` (the release before the running one, from the
    `releases` output) through the health-gated rollout, under load."""
    before = stack.project.outputs()["releases"]
    assert [r["api"] for r in before[:2]] == [DEMO_1, DEMO_2], before
    assert all(r["api_image_id"].startswith("sha256:") and r["deployed_at"] for r in before[:2]), before
    with LoadLoop(HTTPS, "/api/health", body_key=api_version) as load:
        started = time.monotonic()
        proc = subprocess.run([str(REPO / "scripts" / "rollback"), "dev"], capture_output=True, text=True, timeout=900,
                              env={**stack.project.env, "PULUMI_PROJECT_DIR": str(stack.project.dir)})
        took = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    r = load.result
    record("dev: rollback to the previous release (scripts/rollback) under load", f"{len(r.failed)} failed of {r.total}",
           "0 failed", not r.failed)
    record.figure("dev: rollback to the previous release, command to done", f"{took:.0f} s")
    assert not r.failed, r.summary()
    assert "demo-2" in r.bodies, f"no request reached the release rolled back to: {r.bodies}"
    for _ in range(6):
        assert api_version(netcheck.https_get(HTTPS, "/api/health")[2]) == "demo-2"
    after = stack.project.outputs()["releases"]
    assert [x["api"] for x in after[:3]] == [DEMO_2, DEMO_1, DEMO_2], after
    stack.assert_converged()


def test_a_release_that_never_gets_healthy_fails_the_up_and_the_old_replicas_keep_serving(stack, record):
    build_never_healthy_image(DEMO_1)
    stack.set_api_image(NEVER_HEALTHY)
    with LoadLoop(HTTPS, "/api/health", body_key=api_version) as load:
        started = time.monotonic()
        res = stack.project.run("up", "--yes", "--stack", "dev", "--skip-preview", check=False, timeout=900)
        failed_after = time.monotonic() - started
    out = res.stdout + res.stderr
    assert res.code != 0, "the up of a release that never gets healthy succeeded"
    # Declared failed once Docker has given up on it (55 s by default), not at api.start_timeout (180 s).
    record("dev: never-healthy release, the up fails after", f"{failed_after:.0f} s", "<= 90 s (healthcheck gives up at 55 s)",
           failed_after <= 90)
    assert failed_after <= 90, f"the never-healthy release failed the up after {failed_after:.0f} s, target <= 90 s"
    assert "api-1" in out and "healthy" in out, f"the failure does not name the replica and its health:\n{out[-3000:]}"
    print("the failed up says:", *[line for line in out.splitlines() if "error" in line.lower()][:6], sep="\n  ")
    assert not load.result.failed, load.result.summary()
    assert set(load.result.bodies) == {"demo-2"}, load.result.bodies  # the release rolled back to

    # The fix is to set the good tag again: the next up finishes and leaves no broken replica.
    stack.set_api_image(DEMO_1)
    with LoadLoop(HTTPS, "/api/health") as load:
        stack.project.up()
    assert not load.result.failed, load.result.summary()
    bad_id = docker("image", "inspect", "-f", "{{.Id}}", NEVER_HEALTHY).stdout.strip()
    assert bad_id not in {c["Config"]["Image"] for c in stack_containers()}, "a replica of the bad release is left"
    stack.assert_converged()


# ---- teardown ---------------------------------------------------------------------------------


def test_plain_destroy_removes_everything(stack):
    stack.project.run("destroy", "--yes", "--stack", "dev", "--skip-preview", timeout=900)
    assert stack_containers() == []
    assert docker("network", "ls", "-q", "--filter", f"name={PREFIX}-network").stdout.strip() == ""
    assert docker("volume", "ls", "-q", "--filter", f"name={PREFIX}-").stdout.strip() == ""
