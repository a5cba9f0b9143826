"""The prod stack applied to the bare test server without the Pulumi engine.

The engine's Python language host and provider plugins cannot be built here yet
(docs/toolchain.md), so `pulumi up` (test_prod_stack.py) skips. Until it runs, this module
applies what the program declares with tests/e2e/docker_applier.py: the program runs under
Pulumi's mock monitor, and each registration is carried out for real as it happens (remote
commands over SSH as pulumi-command runs them, Docker resources on the server's engine through
an SSH-forwarded socket, as the provider's ssh:// host does), in the program's dependency order,
with real results flowing back. Then the same server and stack checks as the engine test.

What only the engine shows (no-op second `up`, a changed script re-running one step, failures
reported by the engine, state) stays in test_prod_stack.py.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.docker_applier import DockerApplier, Ssh, apply_stack
from tests.prod import checks, stack_checks
from tests.prod.conftest import Pebble, ProdServer
from tests.prod.prod_config import prod_like_config
from tests.prod.stack_checks import CA_ON_SERVER

pytestmark = [pytest.mark.prod, pytest.mark.docker, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]


def local_images() -> dict[str, str]:
    dev = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())["config"]["ai-meeting:images"]
    return {k: v for k, v in dev.items() if k != "pull"}


def applied_config(server: ProdServer, pebble: Pebble, images: dict[str, str], **overrides: Any):
    """The prod-like config with the local images and three API replicas."""
    return prod_like_config(
        server, pebble,
        images={"pull": False, **images},
        api={"replicas": 3, "migrate_command": ["ai-meeting-api", "migrate"]},
        **overrides,
    )


class ServerApplier(DockerApplier):
    """The applier, plus what this harness needs around it: images reach the server's engine
    once the bootstrap installed it (nothing can be pulled here), and every remote command is
    checked to target the server and kept for re-running."""

    def __init__(self, workdir: Path, server: ProdServer, images: list[str]):
        super().__init__(workdir, ssh=Ssh(server.host, server.port, server.user, str(server.key_path)))
        self.server = server
        self.images = images
        self.commands: list[dict[str, Any]] = []
        self.outputs: dict[str, str] = {}

    def new_resource(self, args):
        # An exception raised here never reaches the program under mocks: the registration just
        # never completes and the whole apply waits forever. Keep it for the fixture to report.
        try:
            return super().new_resource(args)
        except BaseException as exc:  # noqa: BLE001
            import traceback

            self.failure = f"{args.typ} {args.name}: {type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}"
            raise

    failure: str | None = None

    def _provider(self, name: str, inputs: dict) -> tuple[str, dict]:
        if inputs.get("host", "").startswith("ssh://"):
            # The provider's host resolves only after the last bootstrap step: Docker is there.
            self.server.load_images(*self.images)
        return super()._provider(name, inputs)

    def _remote_command(self, name: str, inputs: dict) -> tuple[str, dict]:
        conn = inputs["connection"]
        assert (conn["host"], int(conn["port"]), conn["user"]) == (self.server.host, self.server.port, self.server.user)
        self.commands.append({"name": name, **inputs})
        rid, out = super()._remote_command(name, inputs)
        self.outputs[name] = out["stdout"]
        return rid, out


class Applied:
    def __init__(self, server: ProdServer, pebble: Pebble, applier: ServerApplier):
        self.server = server
        self.pebble = pebble
        self.applier = applier
        self.outputs: dict[str, Any] = {}
        self.error: str | None = None
        self.seconds = 0.0

    def require_applied(self) -> None:
        if self.error:
            pytest.fail(f"applying the stack failed, so this cannot be checked:\n{self.error}")


@pytest.fixture(scope="module")
def applied(bare_server: ProdServer, pebble: Pebble, tmp_path_factory) -> Applied:
    import subprocess

    images = local_images()
    absent = [r for r in images.values()
              if subprocess.run(["docker", "image", "inspect", r], capture_output=True).returncode]
    if absent:
        build = subprocess.run([str(REPO / "scripts" / "build-local-images")], capture_output=True, text=True)
        if build.returncode:
            pytest.fail(f"local images {absent} could not be built:\n{build.stderr[-2000:]}")
    bare_server.put(CA_ON_SERVER, pebble.ca_bundle.read_text())
    work = tmp_path_factory.mktemp("applied")
    applier = ServerApplier(work, bare_server, list(images.values()))
    a = Applied(bare_server, pebble, applier)
    cfg = applied_config(bare_server, pebble, images)
    import os

    old = os.environ.get("AI_MEETING_CACHE")
    os.environ["AI_MEETING_CACHE"] = str(work / "cache")  # the Docker provider's ssh key goes here
    started = time.monotonic()
    result: dict[str, Any] = {}

    def run() -> None:
        import asyncio

        asyncio.set_event_loop(asyncio.new_event_loop())
        try:
            result["outputs"] = apply_stack(cfg, applier, "prod")
        except BaseException as exc:  # noqa: BLE001 - reported by every test that needs the stack
            result["error"] = f"{type(exc).__name__}: {exc}"

    # In a thread, so a failed registration (which leaves the mocked program waiting forever)
    # ends the apply with the failure instead of hanging the session.
    worker = threading.Thread(target=run, daemon=True, name="apply-prod-stack")
    worker.start()
    try:
        while worker.is_alive() and applier.failure is None and time.monotonic() - started < 2000:
            worker.join(timeout=2)
    finally:
        a.seconds = time.monotonic() - started
        if old is None:
            os.environ.pop("AI_MEETING_CACHE", None)
        else:
            os.environ["AI_MEETING_CACHE"] = old
    error = applier.failure or result.get("error") or (None if "outputs" in result else "the apply did not finish")
    if error:
        a.error = f"{error}\n--- applied so far:\n" + "\n".join(applier.log)
    else:
        a.outputs = result["outputs"]
    yield a
    tunnel = getattr(applier, "tunnel", None)
    if tunnel:
        tunnel.terminate()


def test_the_program_takes_the_bare_server_to_serving(applied: Applied) -> None:
    applied.require_applied()
    print(f"applied in {applied.seconds:.0f}s:\n" + "\n".join(applied.applier.log))
    names = [c["name"] for c in applied.applier.commands]
    assert names[:9] == [f"bootstrap-{s}" for s in (
        "packages", "timezone", "firewall", "limits", "docker", "layout", "hardening", "preflight", "certbot")]
    assert applied.outputs["public_url"] == f"https://{applied.server.domain}"


def test_preflight_warns_and_goes_on(applied: Applied) -> None:
    applied.require_applied()
    # 2 CPUs here, below the minimum of 4: the step warns and the run goes on (mode warn) ...
    step = next(c for c in applied.applier.commands if c["name"] == "bootstrap-preflight")
    res = applied.server.ssh(step["create"], input=step["stdin"])
    assert re.search(r"\[bootstrap:preflight\] WARN: CPU: \d+ cores?, minimum 4", res.stdout + res.stderr), res
    # ... and the program reports it (stack output; the engine prints it as a warning).
    report = applied.outputs.get("preflight_report", "")
    assert "WARN: CPU" in report, f"the preflight warnings are not in the program's report: {report!r}"


def test_the_server_is_bootstrapped(applied: Applied) -> None:
    applied.require_applied()
    checks.all_bootstrap_results(applied.server, ssh_port_seen_by_client=applied.server.port)


def test_every_container_healthy(applied: Applied) -> None:
    applied.require_applied()
    stack_checks.every_container_healthy(applied.server)


def test_only_nginx_publishes_beyond_loopback(applied: Applied) -> None:
    applied.require_applied()
    stack_checks.only_nginx_publishes_beyond_loopback(applied.server)


def test_site_serves_the_pebble_certificate(applied: Applied) -> None:
    applied.require_applied()
    stack_checks.site_serves_the_acme_certificate(applied.server, applied.pebble)


def test_http_redirects_to_https(applied: Applied) -> None:
    applied.require_applied()
    stack_checks.http_redirects_to_https(applied.server)


def test_renewal_is_scheduled(applied: Applied) -> None:
    applied.require_applied()
    stack_checks.renewal_is_scheduled(applied.server, applied.pebble)


def test_forced_renewal_reloads_nginx_without_dropping_requests(applied: Applied) -> None:
    applied.require_applied()
    stack_checks.forced_renewal_reloads_nginx_without_dropping_requests(applied.server, applied.pebble)


def test_backup_schedule_installed(applied: Applied) -> None:
    applied.require_applied()
    stack_checks.backup_schedule_installed(applied.server)


def test_backup_destroy_restore_round_trip(applied: Applied) -> None:
    applied.require_applied()
    stack_checks.backup_destroy_restore_round_trip(
        applied.server, applied.outputs["minio"], applied.pebble.issuer_root_pem())


def test_rerunning_the_host_commands_changes_nothing(applied: Applied) -> None:
    """What the engine would re-run if a trigger changed must be safe to re-run: the bootstrap
    steps report no change, the certificate is kept, nginx keeps serving."""
    applied.require_applied()
    s = applied.server
    changed = {}
    for cmd in applied.applier.commands:
        if cmd["name"].startswith("bootstrap-") or cmd["name"] == "certbot-issue":
            res = s.ssh(cmd["create"], input=cmd.get("stdin"), timeout=1200)
            lines = checks.changes_in(res.stdout + res.stderr)
            if lines:
                changed[cmd["name"]] = lines
            if cmd["name"] == "certbot-issue":
                assert "valid certificate" in res.stdout, res.stdout
    assert not changed, f"a re-run changed things: {changed}"
    stack_checks.site_serves_the_acme_certificate(s, applied.pebble)
