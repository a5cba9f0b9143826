"""The program's remote commands for the server, as declared, and one run on the real server.

The program runs under Pulumi mocks (tests/unit/harness.py) with a prod-like config pointed
at the test server. Checked here: each bootstrap step is one `sudo -n bash -s` command carrying
the sha256 of its script as its trigger (so the engine re-runs exactly the changed step), a
changed setting changes exactly one step's trigger, and a failing step run on the server says
which step failed and why. The whole stack deployed to the server by the engine is
test_prod_stack.py.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.prod.conftest import Pebble, ProdServer
from tests.prod.prod_config import prod_like_config
from tests.prod.stack_checks import CA_ON_SERVER

pytestmark = [pytest.mark.prod, pytest.mark.docker, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
HOST_SIDE = ("bootstrap-", "certbot-issue", "backup-install")


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

    from tests.unit.harness import MOCK_MACHINE_ID

    names = [c["name"] for c in replay.commands]
    steps = [n for n in names if n.startswith("bootstrap-")]
    assert steps == [f"bootstrap-{s}" for s in (
        "packages", "timezone", "firewall", "limits", "docker", "layout", "hardening", "preflight", "certbot")]
    assert "certbot-issue" in names and "backup-install" in names, names
    for c in bootstrap_steps(replay):
        assert c["create"] == "sudo -n bash -s", c["create"]
        # the script's hash, and the server's machine id (the mocks' one)
        assert c["triggers"] == [hashlib.sha256(c["stdin"].encode()).hexdigest(), MOCK_MACHINE_ID], c["name"]
        assert c["connection"]["host"] == replay.server.host and int(c["connection"]["port"]) == replay.server.port


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
