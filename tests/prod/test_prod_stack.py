"""The prod path through the real engine: `pulumi up` of the program with a prod-like stack
(Pulumi.prod.yaml pointed at the bare test server, pebble as ACME server, the local images
uploaded by the program itself) takes the server to serving meet.test over HTTPS, and every
operation on it works.

One module-scoped stack on one bare server (docs/prod-testing.md). The tests run in file
order and build on each other: first those that only read the deployment, then those that
change it (no-op `up`, a bootstrap setting, an API rollout, failures), last the teardown and
the rebuild through the README's plan path (scripts/plan, scripts/apply-plan).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.engine import REPO, PulumiProject, Result, require_engine, unavailable
from tests.prod import checks, stack_checks
from tests.prod.conftest import NOTES, TIMINGS, Pebble, ProdServer
from tests.prod.stack_checks import CA_ON_SERVER, INSTALL, PREFIX

pytestmark = [pytest.mark.prod, pytest.mark.e2e, pytest.mark.timeout(2400)]

STACK = "prod"
DATA_CONTAINERS = [f"{PREFIX}-postgres", f"{PREFIX}-redis", f"{PREFIX}-minio"]
ROLLOUT_FROM, ROLLOUT_TO = "ai-meeting-local/api:demo-1", "ai-meeting-local/api:demo-2"


def local_images() -> dict[str, str]:
    """The dev stack's image refs (local stand-ins built by scripts/build-local-images)."""
    dev = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())["config"]["ai-meeting:images"]
    return {k: v for k, v in dev.items() if k != "pull"}


def missing_images(images: dict[str, str]) -> list[str]:
    return [
        ref for ref in images.values()
        if subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode != 0
    ]


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


class Deployment:
    """The stack, its server, and what the tests learn along the way."""

    def __init__(self, project: PulumiProject, server: ProdServer, pebble: Pebble, images: dict[str, str], work: Path):
        self.project = project
        self.server = server
        self.pebble = pebble
        self.images = images
        self.work = work
        self.up_output = ""
        self.deployed = False
        self.timings = TIMINGS  # printed at the end of the run (conftest.py)
        self.data_baseline: dict[str, str] | None = None

    def require_deployed(self) -> None:
        if not self.deployed:
            pytest.fail("the first `pulumi up` did not finish, so this cannot be checked")

    def docker(self, args: str, **kw):
        return self.server.sudo(f"docker {args}", **kw)

    def image_config(self, **refs: str) -> dict[str, Any]:
        # Nothing can be pulled anywhere here: the program copies each image to the server
        # (images.upload, `docker save | ssh docker load`) and the server's engine uses it.
        return {"pull": False, "upload": True, **self.images, **refs}

    def timed(self, what: str, fn, *args, **kw):
        started = time.monotonic()
        try:
            return fn(*args, **kw)
        finally:
            self.timings[what] = time.monotonic() - started

    def script(self, name: str, *args: str, timeout: int = 1800) -> Result:
        """Run one of the repo's scripts (scripts/plan, apply-plan, destroy) on this stack's
        project copy and backend, as an operator would from a checkout."""
        env = {
            **self.project.env,
            "PULUMI_PROJECT_DIR": str(self.project.dir),
            "PLAN_DIR": str(self.work / "plans"),
        }
        proc = subprocess.run([str(REPO / "scripts" / name), *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=timeout)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    # --- what the engine and the server say ---

    def state_resources(self) -> list[dict[str, Any]]:
        res = self.project.run("stack", "export", "--show-secrets", "--stack", STACK)
        return json.loads(res.stdout)["deployment"].get("resources") or []

    def pending_operations(self) -> list[Any]:
        res = self.project.run("stack", "export", "--stack", STACK)
        return json.loads(res.stdout)["deployment"].get("pending_operations") or []

    def last_update(self) -> dict[str, Any]:
        res = self.project.run("stack", "history", "--output", "json", "--page-size", "1", "--stack", STACK)
        return json.loads(res.stdout)[0]

    def data_services(self) -> dict[str, str]:
        """Container id and start time of postgres, redis and minio."""
        out = self.docker(
            "inspect -f '{{.Name}} {{.Id}} {{.State.StartedAt}}' " + " ".join(DATA_CONTAINERS)).stdout
        return {line.split()[0].lstrip("/"): " ".join(line.split()[1:]) for line in out.splitlines() if line.strip()}

    def assert_data_services_untouched(self, after: str) -> None:
        assert self.data_baseline is not None
        now = self.data_services()
        changed = {k: (v, now.get(k)) for k, v in self.data_baseline.items() if now.get(k) != v}
        assert not changed, f"{after} restarted or replaced data services (id StartedAt before, after): {changed}"

    def stray_containers(self) -> list[str]:
        """Containers of the stack that are not running (e.g. `Created` by a failed update)."""
        out = self.docker(
            f"ps -a --filter network={PREFIX}-network --filter status=created --filter status=exited"
            " --format '{{.Names}} {{.Status}}'").stdout
        return out.split("\n") if out.strip() else []

    def serving(self) -> None:
        root = self.pebble.issuer_root_pem()
        for path in ("/health", "/api/health"):
            status = stack_checks.https(self.server, root, path)[0]
            assert status == 200, f"{path} answered {status}"


def unsecret(value: Any) -> Any:
    """A value from `pulumi stack export --show-secrets` (secrets carry their plaintext as JSON)."""
    if isinstance(value, dict) and "plaintext" in value:
        return json.loads(value["plaintext"])
    return value


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, request) -> Deployment:
    # The toolchain first: no server is started for tests that would fail on it anyway.
    env = require_engine()
    require_language_host_and_plugins(env)
    prod_server: ProdServer = request.getfixturevalue("bare_server")
    pebble: Pebble = request.getfixturevalue("pebble")
    images = local_images()
    images_needed = {**images, "api-next": ROLLOUT_TO}
    if missing_images(images_needed):
        build = subprocess.run([str(REPO / "scripts" / "build-local-images")], capture_output=True, text=True)
        if build.returncode != 0 or missing_images(images_needed):
            unavailable(f"local images {missing_images(images_needed)} could not be built:\n{build.stderr[-2000:]}")
    assert images["api"] == ROLLOUT_FROM, images
    # Test setup, not bootstrap: the server must trust pebble's HTTPS endpoint, as it would
    # trust Let's Encrypt's through its CA store.
    prod_server.put(CA_ON_SERVER, pebble.ca_bundle.read_text())

    work = tmp_path_factory.mktemp("prod-stack")
    p = PulumiProject(work / "project", STACK, env, stack_file="Pulumi.prod.yaml")
    d = Deployment(p, prod_server, pebble, images, work)
    p.configure(
        target={"kind": "ssh", "host": prod_server.host, "port": prod_server.port, "user": prod_server.user},
        domains=[prod_server.domain],
        tls={
            "mode": "letsencrypt",
            "email": f"ops@{prod_server.domain}",
            "acme_server": pebble.directory_url,
            "acme_ca_bundle": CA_ON_SERVER,
        },
        images=d.image_config(),
        api={"replicas": 3, "migrate_command": ["ai-meeting-api", "migrate"]},
    )
    p.set_secret("target.private_key", prod_server.private_key)
    return d


# --- 1. bare -> serving by one `pulumi up` ---------------------------------------------------


def test_up_takes_the_bare_server_to_serving(deployment: Deployment) -> None:
    d, server = deployment, deployment.server
    assert server.ssh("command -v docker", check=False).code != 0, "server is not bare"
    d.timed("preview of the bare server", d.project.preview)
    started = time.monotonic()
    res = d.project.up()
    seconds = time.monotonic() - started
    d.up_output = res.stdout + res.stderr
    created = re.search(r"\+ (\d+) created", res.stdout)
    d.timings[f"bare server -> serving by one `pulumi up` ({created.group(1) if created else '?'} resources)"] = seconds
    d.deployed = True
    assert d.project.outputs()["public_url"] == f"https://{server.domain}"
    d.serving()


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


def test_preflight_warns_and_up_goes_on(deployment: Deployment) -> None:
    deployment.require_deployed()
    # This machine has 2 CPUs (< 4): the preflight warns, the engine prints it, `up` goes on
    # (mode warn), and the report is a stack output.
    assert re.search(r"preflight: .*WARN.*CPU", deployment.up_output), deployment.up_output[-3000:]
    report = deployment.project.outputs().get("preflight_report", "")
    assert re.search(r"\[bootstrap:preflight\] WARN: CPU: \d+ cores?, minimum 4", report), report


# --- 3. the stack on the server, 4. certificates, 5. backups (tests/prod/stack_checks.py) ----


def test_every_container_healthy_on_the_server(deployment: Deployment) -> None:
    deployment.require_deployed()
    stack_checks.every_container_healthy(deployment.server)


def test_only_nginx_publishes_beyond_loopback(deployment: Deployment) -> None:
    deployment.require_deployed()
    stack_checks.only_nginx_publishes_beyond_loopback(deployment.server)


def test_site_serves_the_pebble_certificate(deployment: Deployment) -> None:
    deployment.require_deployed()
    stack_checks.site_serves_the_acme_certificate(deployment.server, deployment.pebble)


def test_http_redirects_to_https(deployment: Deployment) -> None:
    deployment.require_deployed()
    stack_checks.http_redirects_to_https(deployment.server)


def test_api_writes_its_log_file_on_the_host(deployment: Deployment) -> None:
    """The API runs as uid api.log_uid (10001), not root: the bootstrap hands it
    <install_dir>/logs/app, and every replica appends to app.log there."""
    deployment.require_deployed()
    s = deployment.server
    logs = f"{INSTALL}/logs/app"
    assert s.sudo(f"stat -c '%u %a' {logs}").stdout.split() == ["10001", "755"]
    stack_checks.https(s, deployment.pebble.issuer_root_pem(), "/api/health")
    log = s.sudo(f"cat {logs}/app.log", check=False)
    assert log.code == 0 and "listening on" in log.stdout, \
        f"{logs}/app.log: {log.stdout[-500:]} {log.stderr[-500:]}\n{s.sudo(f'ls -la {logs}').stdout}"
    assert s.sudo(f"stat -c %u {logs}/app.log").stdout.strip() == "10001"
    api = deployment.docker(f"ps -q --filter label=ai-meeting.service=api").stdout.split()
    assert len(api) == 3, api
    for cid in api:
        logs_out = deployment.docker(f"logs {cid}", check=False)
        assert "Permission denied" not in logs_out.stdout + logs_out.stderr, logs_out.stderr[-1000:]


def test_renewal_is_scheduled(deployment: Deployment) -> None:
    deployment.require_deployed()
    stack_checks.renewal_is_scheduled(deployment.server, deployment.pebble)


def test_backup_schedule_installed(deployment: Deployment) -> None:
    deployment.require_deployed()
    stack_checks.backup_schedule_installed(deployment.server)


def test_rerunning_the_host_commands_changes_nothing(deployment: Deployment) -> None:
    """What the engine re-runs when a trigger changes must be safe to re-run: each bootstrap
    step and the certificate issue, exactly as recorded in the stack's state, report no
    change, the certificate is kept, and nginx keeps serving it."""
    deployment.require_deployed()
    s = deployment.server
    commands = {
        r["urn"].split("::")[-1]: r["inputs"] for r in deployment.state_resources()
        if r["type"] == "command:remote:Command"
    }
    wanted = [n for n in commands if n.startswith("bootstrap-")] + ["certbot-issue"]
    assert len(wanted) == 10 and "certbot-issue" in commands, sorted(commands)
    changed = {}
    for name in wanted:
        inputs = commands[name]
        res = s.ssh(unsecret(inputs["create"]), input=unsecret(inputs.get("stdin")), timeout=1200)
        lines = checks.changes_in(res.stdout + res.stderr)
        if lines:
            changed[name] = lines
        if name == "certbot-issue":
            assert "valid certificate" in res.stdout + res.stderr, res.stdout + res.stderr
    assert not changed, f"a re-run changed things: {changed}"
    stack_checks.site_serves_the_acme_certificate(s, deployment.pebble)


def test_forced_renewal_reloads_nginx_without_dropping_requests(deployment: Deployment) -> None:
    deployment.require_deployed()
    stack_checks.forced_renewal_reloads_nginx_without_dropping_requests(deployment.server, deployment.pebble)


def test_backup_destroy_restore_round_trip(deployment: Deployment) -> None:
    deployment.require_deployed()
    minio = deployment.project.outputs(show_secrets=True)["minio"]
    stack_checks.backup_destroy_restore_round_trip(
        deployment.server, minio, deployment.pebble.issuer_root_pem())


# --- 6. `up` again: nothing changes, nothing restarts ----------------------------------------


def test_second_up_changes_nothing(deployment: Deployment) -> None:
    d = deployment
    d.require_deployed()
    p = d.project
    # From here on, no `up` that leaves them alone may restart postgres, redis or minio.
    d.data_baseline = d.data_services()
    res = d.timed("no-op preview", p.preview, "--expect-no-changes", "--diff", check=False)
    assert res.code == 0, f"a second preview wants changes:\n{res.stdout[-4000:]}"
    d.timed("no-op up", p.up)
    changes = _changed(d.last_update())
    assert not changes, f"the second up changed {changes}"
    d.assert_data_services_untouched("a no-op up")


def test_changing_one_bootstrap_setting_reruns_only_that_step(deployment: Deployment) -> None:
    d = deployment
    d.require_deployed()
    p = d.project
    p.configure(bootstrap={"min_cpus": 3})  # changes the preflight script only
    res = p.run("preview", "--stack", STACK, "--json", timeout=900)
    changed = {s["urn"].split("::")[-1]: s["op"] for s in json.loads(res.stdout)["steps"] if s["op"] != "same"}
    assert set(changed) <= {"bootstrap-preflight", "ai-meeting", f"ai-meeting-{STACK}"}, changed
    assert "bootstrap-preflight" in changed, changed
    d.timed("up re-running one bootstrap step", p.up)
    assert sum(_changed(d.last_update()).values()) == 1, d.last_update()
    d.assert_data_services_untouched("re-running a bootstrap step")
    assert p.preview("--expect-no-changes", check=False).code == 0


def _changed(update: dict[str, Any]) -> dict[str, int]:
    """What an update did, from `pulumi stack history` (everything but `same`)."""
    assert update.get("result") == "succeeded", update
    return {op: n for op, n in (update.get("resourceChanges") or {}).items() if op != "same" and n}


# --- 7. an API rollout under load -------------------------------------------------------------


class Load:
    """Clients requesting a path through nginx (new connection each time) until stopped."""

    def __init__(self, d: Deployment, path: str = "/api/health", clients: int = 3):
        self.server, self.root, self.path = d.server, d.pebble.issuer_root_pem(), path
        self.results: list[tuple[float, str, str]] = []  # (time, "ok" or error, version)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]

    def run(self) -> None:
        while not self.stop.is_set():
            at = time.monotonic()
            try:
                status, _, body, _ = stack_checks.https(self.server, self.root, self.path)
                version = json.loads(body).get("version", "") if status == 200 else ""
                self.results.append((at, "ok" if status == 200 else f"status {status}: {body[:200]}", version))
            except Exception as exc:  # noqa: BLE001 - every failure is a failed request
                self.results.append((at, repr(exc), ""))
            time.sleep(0.05)

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    @property
    def failures(self) -> list[tuple[float, str, str]]:
        return [r for r in self.results if r[1] != "ok"]


def test_api_rollout_under_load_fails_no_request(deployment: Deployment) -> None:
    d = deployment
    d.require_deployed()
    p, s = d.project, d.server
    p.configure(images=d.image_config(api=ROLLOUT_TO))
    with Load(d) as load:
        time.sleep(2)
        started = time.monotonic()
        p.up()
        seconds = time.monotonic() - started
        time.sleep(3)
    d.timings[f"API rollout {ROLLOUT_FROM} -> {ROLLOUT_TO}, 3 replicas, by `pulumi up` "
              f"({len(load.results)} requests through nginx meanwhile, {len(load.failures)} failed)"] = seconds
    assert load.results, "the load loop sent no request"
    assert not load.failures, (
        f"{len(load.failures)} of {len(load.results)} requests failed during the rollout: {load.failures[:5]}")
    versions = [v for _, _, v in sorted(load.results)]
    assert versions[0] == "demo-1" and versions[-1] == "demo-2", sorted(set(versions))
    # Every replica runs the new image; the old ones are gone.
    new_id = d.docker(f"image inspect -f '{{{{.Id}}}}' {ROLLOUT_TO}").stdout.strip()
    replicas = d.docker("ps -q --filter label=ai-meeting.service=api").stdout.split()
    running = d.docker(f"inspect -f '{{{{.Image}}}}' {' '.join(replicas)}").stdout.split()
    assert running == [new_id] * 3, (running, new_id)
    stack_checks.every_container_healthy(s)
    assert not d.stray_containers(), d.stray_containers()
    d.assert_data_services_untouched("an API rollout")
    assert p.preview("--expect-no-changes", check=False).code == 0


# --- 8. failures say what failed and where; nothing half-applied; the next `up` finishes ------


def assert_nothing_half_applied(d: Deployment, after: str) -> None:
    assert not d.pending_operations(), f"{after} left pending operations in the state"
    assert not d.stray_containers(), f"{after} left containers behind: {d.stray_containers()}"
    d.assert_data_services_untouched(after)
    d.serving()


def failed_up(p: PulumiProject, what: str) -> str:
    started = time.monotonic()
    res = p.run("up", "--yes", "--stack", STACK, "--skip-preview", check=False, timeout=900)
    seconds = time.monotonic() - started
    out = res.stdout + res.stderr
    assert res.code != 0, f"up passed:\n{out[-3000:]}"
    errors = [line.strip() for line in out.splitlines() if re.search(r"error:|ERROR|FAILED", line)]
    NOTES.append(f"{what} (failed after {seconds:.0f}s):\n    " + "\n    ".join(e[:400] for e in errors[:4]))
    return out


def test_a_failed_bootstrap_step_stops_up_and_the_fixed_up_finishes(deployment: Deployment) -> None:
    d = deployment
    d.require_deployed()
    p = d.project
    p.configure(bootstrap={"preflight_mode": "fail"})  # this 2-CPU server is below the minimum
    out = failed_up(p, "a failing bootstrap step (preflight_mode: fail)")
    assert "bootstrap-preflight" in out and re.search(r"\[bootstrap:preflight\] (ERROR|FAILED)", out), out[-3000:]
    assert "CPU" in out
    assert_nothing_half_applied(d, "a failed bootstrap step")
    p.configure(bootstrap={"preflight_mode": "warn"})
    p.up()
    d.assert_data_services_untouched("the up after a failed step")
    assert p.preview("--expect-no-changes", check=False).code == 0


def test_a_bad_ssh_key_fails_clearly_and_the_next_up_finishes(deployment: Deployment, tmp_path: Path) -> None:
    d = deployment
    d.require_deployed()
    p, s = d.project, d.server
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    p.set_secret("target.private_key", stranger.read_text())
    p.configure(bootstrap={"min_cpus": 2})  # a step must connect
    try:
        out = failed_up(p, "a key the server does not know")
        assert re.search(r"unable to authenticate|permission denied|handshake failed", out, re.I), out[-3000:]
        assert re.search(r"bootstrap-\w+|docker", out), f"the failure does not say where:\n{out[-3000:]}"
        assert s.private_key not in out and stranger.read_text() not in out, "a private key was printed"
    finally:
        p.set_secret("target.private_key", s.private_key)
    assert_nothing_half_applied(d, "an up with a wrong key")
    p.up()
    d.assert_data_services_untouched("the up after a wrong key")
    res = p.preview("--expect-no-changes", check=False)
    assert res.code == 0, res.stdout[-3000:]


def test_an_unreachable_host_fails_clearly_and_the_next_up_finishes(deployment: Deployment) -> None:
    d = deployment
    d.require_deployed()
    p, s = d.project, d.server
    target = {"kind": "ssh", "host": s.host, "port": 2299, "user": s.user}
    doc = yaml.safe_load((p.dir / f"Pulumi.{STACK}.yaml").read_text())
    key = doc["config"]["ai-meeting:target"]["private_key"]
    p.configure(target={**target, "private_key": key}, bootstrap={"min_cpus": 1})
    try:
        out = failed_up(p, "an unreachable host (port 2299)")
        assert re.search(r"connection refused|dial tcp|unable to connect", out, re.I), out[-3000:]
        assert re.search(r"bootstrap-\w+", out), f"the failure does not say where:\n{out[-3000:]}"
    finally:
        p.configure(target={"kind": "ssh", "host": s.host, "port": s.port, "user": s.user, "private_key": key})
    assert_nothing_half_applied(d, "an up against an unreachable host")
    p.up()
    d.assert_data_services_untouched("the up after an unreachable host")
    assert p.preview("--expect-no-changes", check=False).code == 0


# --- 9. teardown (scripts/destroy) and the rebuild by the plan path ---------------------------

PROBE_ROWS = 42


def test_destroy_removes_all_but_the_protected_data(deployment: Deployment) -> None:
    d = deployment
    d.require_deployed()
    s = d.server
    minio = d.project.outputs(show_secrets=True)["minio"]
    stack_checks._psql(s, "CREATE TABLE IF NOT EXISTS teardown_probe (id int PRIMARY KEY)")
    stack_checks._psql(s, f"INSERT INTO teardown_probe SELECT generate_series(1, {PROBE_ROWS}) ON CONFLICT DO NOTHING")
    assert stack_checks._redis(s, "SET", "teardown:key", "survives") == "OK"
    stack_checks._mc(s, minio, f"pipe t/{minio['bucket']}/teardown/object.bin", stdin="object-bytes")
    stack_checks._redis(s, "BGREWRITEAOF")  # nothing only in memory
    time.sleep(2)

    # Plain `pulumi destroy` refuses while protected resources exist, and deletes nothing.
    plain = d.project.run("destroy", "--yes", "--stack", STACK, check=False)
    assert plain.code != 0 and "protected" in plain.stdout + plain.stderr, plain.stdout[-3000:]
    d.serving()

    # As on a machine that never ran the program (or cleaned its cache): the Docker provider's
    # key file is missing, and scripts/destroy puts it back from the stack config.
    import shutil

    shutil.rmtree(Path(d.project.env["AI_MEETING_CACHE"]) / "ssh", ignore_errors=True)
    res = d.timed("scripts/destroy prod", d.script, "destroy", STACK)
    assert res.code == 0, f"scripts/destroy exited {res.code}\n{res.stdout[-4000:]}\n{res.stderr[-3000:]}"
    assert "writing the deploy key" in res.stdout, res.stdout[-2000:]
    # Left: the protected resources and what they need to be managed later (their provider,
    # whose host waits on the bootstrap steps; those have nothing to undo on the server).
    resources = d.state_resources()
    protected = [r for r in resources if r.get("protect")]
    kinds = sorted(r["type"] for r in protected)
    assert kinds.count("docker:index/volume:Volume") == 3, kinds
    assert sum(k.startswith("random:") for k in kinds) == 5 and len(kinds) == 8, kinds
    needed = dependency_closure(resources, protected)
    extra = [r["urn"].split("::")[-1] for r in resources if r["urn"] not in needed]
    assert not extra, f"the teardown left resources no protected one needs: {extra}"
    kept = sorted({r["type"] for r in resources if r["urn"] in needed and not r.get("protect")})
    assert set(kept) <= {"command:remote:Command", "pulumi:providers:docker", "pulumi:providers:command",
                         "pulumi:providers:random", "pulumi:pulumi:Stack", "ai-meeting:stack:AiMeeting",
                         "ai-meeting:bootstrap:Bootstrap", "ai-meeting:secrets:Secrets",
                         "ai-meeting:network:NetworkAndData"}, kept
    assert d.docker(f"ps -aq --filter label=ai-meeting.stack={STACK}").stdout.strip() == "", "containers left"
    volumes = d.docker("volume ls -q").stdout.split()
    for service in ("postgres", "redis", "minio"):
        assert f"{PREFIX}-{service}-data" in volumes, volumes
    assert_site_down(s)
    assert_data_on_disk(s)


def test_up_after_destroy_serves_the_same_data(deployment: Deployment) -> None:
    """What `scripts/destroy` kept is enough: `pulumi up` brings the site back on the same
    volumes with the same secrets."""
    d = deployment
    d.require_deployed()
    s = d.server
    d.timed("protected resources only -> serving by `pulumi up`", d.project.up)
    stack_checks.every_container_healthy(s)
    d.serving()
    assert_probe_data(d)
    assert d.project.preview("--expect-no-changes", check=False).code == 0


def assert_probe_data(d: Deployment) -> None:
    s = d.server
    lost = []
    rows = stack_checks._psql(s, "SELECT count(*) FROM teardown_probe", check=False)
    if rows.stdout.strip() != str(PROBE_ROWS):
        lost.append(f"PostgreSQL: {rows.stdout.strip()!r} rows {rows.stderr.strip()[-300:]}")
    if (key := stack_checks._redis(s, "GET", "teardown:key")) != "survives":
        lost.append(f"Redis: {key!r}")
    minio = d.project.outputs(show_secrets=True)["minio"]
    obj = stack_checks._mc(s, minio, f"cat t/{minio['bucket']}/teardown/object.bin", check=False)
    if obj.stdout != "object-bytes":
        lost.append(f"MinIO: {obj.stdout[:100]!r} {obj.stderr.strip()[-300:]}")
    assert not lost, "the rebuilt stack lost data: " + "; ".join(lost)


def test_destroy_all_leaves_the_data_on_disk(deployment: Deployment) -> None:
    d = deployment
    d.require_deployed()
    res = d.timed("scripts/destroy prod --all", d.script, "destroy", STACK, "--all")
    assert res.code == 0, f"scripts/destroy --all exited {res.code}\n{res.stdout[-4000:]}\n{res.stderr[-3000:]}"
    left = [r["urn"] for r in d.state_resources() if not r["type"].startswith("pulumi:providers:")]
    assert not [u for u in left if "pulumi:pulumi:Stack" not in u], left
    assert_data_on_disk(d.server)


def test_plan_and_apply_plan_bring_the_site_back_with_its_data(deployment: Deployment) -> None:
    """The README's path (scripts/plan, then scripts/apply-plan) on a server whose stack state
    is empty, as on a bare one: the bootstrap re-runs, the secrets are new, the data is the
    one left in /opt/ai-meeting/data."""
    d = deployment
    d.require_deployed()
    s = d.server
    started = time.monotonic()
    plan = d.script("plan", STACK)
    assert plan.code == 0, f"scripts/plan exited {plan.code}\n{plan.stdout[-4000:]}\n{plan.stderr[-3000:]}"
    d.timings["scripts/plan (empty state)"] = time.monotonic() - started
    applied = d.timed("scripts/apply-plan (empty state -> serving)", d.script, "apply-plan", STACK)
    assert applied.code == 0, f"scripts/apply-plan exited {applied.code}\n{applied.stdout[-6000:]}\n{applied.stderr[-3000:]}"
    d.timings["empty state -> serving by scripts/plan + scripts/apply-plan"] = time.monotonic() - started
    stack_checks.every_container_healthy(s)
    stack_checks.site_serves_the_acme_certificate(s, d.pebble)
    assert_probe_data(d)
    assert d.project.preview("--expect-no-changes", check=False).code == 0


def dependency_closure(resources: list[dict[str, Any]], roots: list[dict[str, Any]]) -> set[str]:
    """URNs of `roots` and everything they depend on (dependencies, provider, parent)."""
    by_urn = {r["urn"]: r for r in resources}
    seen: set[str] = set()
    todo = [r["urn"] for r in roots]
    while todo:
        urn = todo.pop()
        if urn in seen or urn not in by_urn:
            continue
        seen.add(urn)
        r = by_urn[urn]
        todo += r.get("dependencies") or []
        for deps in (r.get("propertyDependencies") or {}).values():
            todo += deps
        if r.get("provider"):
            todo.append(r["provider"].rsplit("::", 1)[0])
        if r.get("parent"):
            todo.append(r["parent"])
    return seen


def assert_site_down(s: ProdServer) -> None:
    import socket
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((s.host, s.https_port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=s.domain) as tls:
                tls.sendall(f"GET /health HTTP/1.1\r\nHost: {s.domain}\r\nConnection: close\r\n\r\n".encode())
                head = tls.recv(4096).decode(errors="replace")
    except OSError:  # refused, reset, no TLS: nothing serves
        return
    assert not head, f"the site still answers after the teardown: {head[:200]!r}"


def assert_data_on_disk(s: ProdServer) -> None:
    for service, marker in (("postgres", "pgdata/PG_VERSION"), ("redis", "."), ("minio", ".minio.sys")):
        path = f"{INSTALL}/data/{service}/{marker}"
        assert s.sudo(f"test -e {shlex.quote(path)}", check=False).code == 0, f"{path} is gone"
    du = s.sudo(f"du -s {INSTALL}/data/postgres {INSTALL}/data/redis {INSTALL}/data/minio").stdout
    assert all(int(line.split()[0]) > 0 for line in du.splitlines()), du
    # The probe row is in the database files, the key in Redis' AOF.
    assert s.sudo(f"grep -rqs 'teardown:key' {INSTALL}/data/redis", check=False).code == 0, \
        s.sudo(f"ls -laR {INSTALL}/data/redis").stdout
