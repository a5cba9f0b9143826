"""The program's own remote commands, replayed on the bare test server without the engine.

The program is run under Pulumi mocks (tests/unit/harness.py) with a prod-like config pointed
at the test server; every `command:remote:Command` it declares for the server's host side
(bootstrap steps, certbot issue, backup install) is then run over SSH exactly as
pulumi-command runs it (`create` through the deploy user's shell, `stdin` piped), in
declaration order. That shows the bootstrap, Let's Encrypt issuance and the backup install on a
real Debian 12 server even where the Pulumi engine and its plugins cannot be built;
tests/prod/test_prod_stack.py does the same through a real `pulumi up`.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.prod import checks
from tests.prod.conftest import Pebble, ProdServer

pytestmark = [pytest.mark.prod, pytest.mark.docker, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
CA_ON_SERVER = "/etc/ai-meeting-test/pebble-ca.pem"
HOST_SIDE = ("bootstrap-", "certbot-issue", "backup-install")


def prod_like_config(server: ProdServer, pebble: Pebble, **overrides: Any):
    from config import validate_config

    raw = {
        k.removeprefix("ai-meeting:"): v
        for k, v in yaml.safe_load((REPO / "Pulumi.prod.yaml").read_text())["config"].items()
    }
    raw.update(
        environment="prod",
        target={"kind": "ssh", "host": server.host, "port": server.port, "user": server.user,
                "private_key": server.private_key},
        domains=[server.domain],
        tls={"mode": "letsencrypt", "email": f"ops@{server.domain}",
             "acme_server": pebble.directory_url, "acme_ca_bundle": CA_ON_SERVER},
    )
    raw.update(overrides)
    return validate_config(raw, "prod")


def declared_commands(cfg, cache: Path) -> list[dict[str, Any]]:
    """The program's remote commands for the server's host side, in declaration order."""
    from tests.unit.harness import deploy

    old = os.environ.get("AI_MEETING_CACHE")
    os.environ["AI_MEETING_CACHE"] = str(cache)  # the Docker provider writes its ssh key there
    try:
        rec = deploy(cfg, stack="prod").recorder
    finally:
        if old is None:
            os.environ.pop("AI_MEETING_CACHE", None)
        else:
            os.environ["AI_MEETING_CACHE"] = old
    return [
        {"name": r.name, **r.inputs}
        for r in rec.of_type("command:remote:Command")
        if r.name.startswith(HOST_SIDE)
    ]


class Replay:
    def __init__(self, server: ProdServer, commands: list[dict[str, Any]]):
        self.server = server
        self.commands = commands
        self.outputs: dict[str, str] = {}
        self.seconds: dict[str, float] = {}

    def named(self, name: str) -> dict[str, Any]:
        return next(c for c in self.commands if c["name"] == name)

    def run(self, cmd: dict[str, Any], check: bool = True):
        """As pulumi-command's remote.Command does: the `create` line, `stdin` piped."""
        started = time.monotonic()
        res = self.server.ssh(cmd["create"], input=cmd.get("stdin"), check=check, timeout=1200)
        self.seconds[cmd["name"]] = time.monotonic() - started
        self.outputs[cmd["name"]] = res.stdout + res.stderr
        return res


@pytest.fixture(scope="module")
def replay(bare_server: ProdServer, pebble: Pebble, tmp_path_factory) -> Replay:
    bare_server.put(CA_ON_SERVER, pebble.ca_bundle.read_text())
    cfg = prod_like_config(bare_server, pebble)
    return Replay(bare_server, declared_commands(cfg, tmp_path_factory.mktemp("cache")))


def bootstrap_steps(r: Replay) -> list[dict[str, Any]]:
    return [c for c in r.commands if c["name"].startswith("bootstrap-")]


def test_the_program_declares_each_step_with_its_hash(replay: Replay) -> None:
    import hashlib

    names = [c["name"] for c in replay.commands]
    steps = [n for n in names if n.startswith("bootstrap-")]
    assert steps == [f"bootstrap-{s}" for s in (
        "packages", "timezone", "firewall", "limits", "docker", "layout", "hardening", "preflight", "certbot")]
    assert "certbot-issue" in names and "backup-install" in names, names
    for c in bootstrap_steps(replay):
        assert c["create"] == "sudo -n bash -s", c["create"]
        assert c["triggers"] == [hashlib.sha256(c["stdin"].encode()).hexdigest()], c["name"]
        assert c["connection"]["host"] == replay.server.host and int(c["connection"]["port"]) == replay.server.port


def test_bootstrap_runs_on_the_bare_server(replay: Replay) -> None:
    assert replay.server.ssh("command -v docker", check=False).code != 0, "server is not bare"
    for cmd in bootstrap_steps(replay):
        replay.run(cmd)
    timings = ", ".join(f"{k.removeprefix('bootstrap-')} {v:.0f}s" for k, v in replay.seconds.items())
    print(f"bootstrap steps: {timings}")
    # 2 CPUs here, below the minimum of 4: a warning, and the run goes on (preflight_mode warn).
    assert re.search(r"\[bootstrap:preflight\] WARN: CPU: \d+ cores?, minimum 4",
                     replay.outputs["bootstrap-preflight"]), replay.outputs["bootstrap-preflight"]


def test_the_server_is_bootstrapped(replay: Replay) -> None:
    checks.all_bootstrap_results(replay.server, ssh_port_seen_by_client=replay.server.port)


def test_certbot_issue_gets_a_certificate_from_pebble(replay: Replay, pebble: Pebble) -> None:
    res = replay.run(replay.named("certbot-issue"), check=False)
    assert res.code == 0, f"certbot-issue failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    s = replay.server
    leaf = s.sudo("openssl x509 -noout -subject -issuer -ext subjectAltName -in /opt/ai-meeting/ssl/fullchain.pem").stdout
    assert f"DNS:{s.domain}" in leaf and "Pebble Intermediate CA" in leaf, leaf
    assert s.sudo("stat -c %a /opt/ai-meeting/ssl/privkey.pem").stdout.strip() == "600"
    cron = s.sudo("cat /etc/cron.d/ai-meeting-certbot").stdout
    assert re.search(r"^\S+ \S+ \* \* \* root certbot renew .*--deploy-hook", cron, re.M), cron


def test_backup_install(replay: Replay) -> None:
    replay.run(replay.named("backup-install"))
    s = replay.server
    cron = s.sudo("cat /etc/cron.d/ai-meeting-backup").stdout
    assert re.search(r"^0 2 \* \* \* root .*backup", cron, re.M), cron
    for script in ("backup.sh", "restore.sh"):
        assert s.sudo(f"test -x /opt/ai-meeting/bin/{script}", check=False).code == 0, script
    assert "RETENTION_DAYS=30" in s.sudo("cat /opt/ai-meeting/bin/backup.sh").stdout


def test_a_second_run_changes_nothing(replay: Replay) -> None:
    changed = {}
    for cmd in bootstrap_steps(replay):
        replay.run(cmd)
        lines = checks.changes_in(replay.outputs[cmd["name"]])
        if lines:
            changed[cmd["name"]] = lines
    assert not changed, f"a re-run of the bootstrap changed things: {changed}"
    out = replay.run(replay.named("certbot-issue")).stdout
    assert "valid certificate" in out and "already current" in out, out


def test_a_failing_step_says_what_and_where_and_a_fixed_rerun_finishes(replay: Replay, pebble: Pebble,
                                                                       tmp_path) -> None:
    s = replay.server
    strict = declared_commands(
        prod_like_config(s, pebble, bootstrap={"preflight_mode": "fail"}), tmp_path / "cache")
    step = next(c for c in strict if c["name"] == "bootstrap-preflight")
    res = replay.run(step, check=False)
    assert res.code != 0, "preflight_mode fail passed on a 2-CPU server"
    assert re.search(r"\[bootstrap:preflight\] (ERROR|FAILED): .*", res.stderr), res.stderr
    assert "CPU" in res.stdout + res.stderr
    # Nothing half-applied: the normal step passes again.
    replay.run(replay.named("bootstrap-preflight"))


def test_changing_one_setting_changes_exactly_one_step(replay: Replay, pebble: Pebble, tmp_path) -> None:
    """The engine re-runs a command when its triggers change: here only the preflight's do."""
    other = declared_commands(prod_like_config(replay.server, pebble, bootstrap={"min_cpus": 3}), tmp_path / "c")
    before = {c["name"]: c.get("triggers") for c in replay.commands}
    after = {c["name"]: c.get("triggers") for c in other}
    assert before.keys() == after.keys()
    assert [n for n in before if before[n] != after[n]] == ["bootstrap-preflight"]
