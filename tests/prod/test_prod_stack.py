"""The prod path for real: `pulumi up` with a prod-like stack takes the bare test server to
serving meet.test over HTTPS with a certificate from pebble, and its operations work.

One module-scoped stack on the session's server; the tests run in file order and build on
each other (a failed `up` skips the rest). See docs/prod-testing.md for the harness.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e.engine import REPO, PulumiProject, require_engine, unavailable
from tests.prod import checks, stack_checks
from tests.prod.conftest import Pebble, ProdServer

pytestmark = [pytest.mark.prod, pytest.mark.e2e, pytest.mark.timeout(2400)]

from tests.prod.stack_checks import CA_ON_SERVER


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


def test_renewal_is_scheduled(deployment: Deployment) -> None:
    deployment.require_deployed()
    stack_checks.renewal_is_scheduled(deployment.server, deployment.pebble)


def test_forced_renewal_reloads_nginx_without_dropping_requests(deployment: Deployment) -> None:
    deployment.require_deployed()
    stack_checks.forced_renewal_reloads_nginx_without_dropping_requests(deployment.server, deployment.pebble)


def test_backup_schedule_installed(deployment: Deployment) -> None:
    deployment.require_deployed()
    stack_checks.backup_schedule_installed(deployment.server)


def test_backup_destroy_restore_round_trip(deployment: Deployment) -> None:
    deployment.require_deployed()
    minio = deployment.project.outputs(show_secrets=True)["minio"]
    stack_checks.backup_destroy_restore_round_trip(
        deployment.server, minio, deployment.pebble.issuer_root_pem())


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
