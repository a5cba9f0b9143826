"""The servers' Docker daemon settings (issue #19) as the program declares them: live-restore on
a single server, off on every Swarm node (swarm mode refuses it), each in the docker step's
script, so a change re-runs that step alone (its sha256 is the trigger)."""

from __future__ import annotations

import json
import re

import pytest

from config import ConfigError, validate_config
from tests.unit.harness import config, deploy
from tests.unit.test_swarm import swarm_raw


def daemon_json(script: str) -> dict:
    """The keys the docker step merges into /etc/docker/daemon.json."""
    m = re.search(r"^OURS='(\{.*\})'$", script, re.M)
    assert m, "the docker step carries no daemon.json"
    return json.loads(m.group(1))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AI_MEETING_CACHE", str(tmp_path))


def test_a_single_server_gets_live_restore_and_the_restart_guard(cache):
    step = deploy(config("prod")).recorder.named("bootstrap-docker")
    ours = daemon_json(step.inputs["stdin"])
    assert ours == {"live-restore": True, "log-driver": "json-file", "log-opts": {"max-file": "5", "max-size": "20m"},
                    "no-new-privileges": True, "userland-proxy": False}
    assert "LiveRestoreEnabled" in step.inputs["stdin"]
    assert "--dports 80,443 " in step.inputs["stdin"]  # nginx's ports held while dockerd starts


def test_every_swarm_node_gets_live_restore_off(cache):
    d = deploy(validate_config(swarm_raw(), "staging"), stack="swarm")
    steps = [r for r in d.recorder.of_type("remote:Command") if r.name.endswith("-bootstrap-docker")]
    assert len(steps) == 3
    for step in steps:
        ours = daemon_json(step.inputs["stdin"])
        assert ours["live-restore"] is False and ours["no-new-privileges"] is True, step.name
        # Not verified on a swarm's published ports: left at Docker's default there.
        assert ours["userland-proxy"] is True, step.name
        assert "LiveRestoreEnabled" not in step.inputs["stdin"] and "ai-meeting-dockerd-start" not in step.inputs["stdin"]


def test_live_restore_on_a_swarm_is_refused_with_the_reason():
    with pytest.raises(ConfigError) as exc:
        validate_config(swarm_raw(bootstrap={"docker": {"live_restore": True}}), "staging")
    assert any("bootstrap.docker.live_restore" in p and "swarm" in p for p in exc.value.problems), exc.value.problems


def test_daemon_settings_are_validated_and_change_only_the_docker_step(cache):
    with pytest.raises(ConfigError) as exc:
        validate_config({"environment": "dev", "bootstrap": {"docker": {"log_max_size": "big"}}}, "dev")
    assert any("log_max_size" in p for p in exc.value.problems), exc.value.problems
    before = {r.name: r.inputs["stdin"] for r in deploy(config("prod")).recorder.of_type("remote:Command")
              if r.name.startswith("bootstrap-")}
    after = {r.name: r.inputs["stdin"] for r in deploy(config("prod", bootstrap={"docker": {"log_max_file": 6}})).recorder
             .of_type("remote:Command") if r.name.startswith("bootstrap-")}
    assert [n for n in before if before[n] != after[n]] == ["bootstrap-docker"]
    assert daemon_json(after["bootstrap-docker"])["log-opts"]["max-file"] == "6"
    off = deploy(config("prod", bootstrap={"docker": {"live_restore": False, "userland_proxy": True}})).recorder
    assert daemon_json(off.named("bootstrap-docker").inputs["stdin"])["live-restore"] is False
