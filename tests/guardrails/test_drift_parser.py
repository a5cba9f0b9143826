"""Unit tests of the refresh-JSON parsing behind scripts/drift."""

import json
from pathlib import Path

from ai_meeting_policy import drift

FIXTURES = Path(__file__).parent / "fixtures"


def load(name):
    return json.loads((FIXTURES / name).read_text())


def test_clean_refresh_has_no_drift():
    assert drift.find_drift(load("refresh-clean.json")) == []
    assert drift.report([], "dev")[0] == drift.EXIT_OK


def test_changed_and_deleted_containers_are_drift():
    # captured after `docker update --memory 256m --memory-swap 256m api-1; docker rm -f postgres`
    found = {d.name: d for d in drift.find_drift(load("refresh-drift.json"))}
    assert set(found) == {"api-1", "postgres"}
    assert found["api-1"].op == "update" and found["api-1"].changed == ["memory", "memorySwap"]
    assert found["postgres"].op == "delete"
    assert found["api-1"].urn.endswith("guardrails:app:Service$docker:index/container:Container::api-1")
    code, message = drift.report(list(found.values()), "dev")
    assert code == drift.EXIT_DRIFT
    assert "api-1: changed outside Pulumi: memory, memorySwap" in message
    assert "postgres: gone" in message


def test_refresh_step_with_changed_outputs_but_no_diff_is_drift():
    step = {"op": "refresh", "urn": "urn:pulumi:dev::p::docker:index/container:Container::web",
            "oldState": {"outputs": {"memory": 128, "labels": [{"label": "a", "value": "1"}],
                                     "containerLogs": "x"}},
            "newState": {"outputs": {"memory": 128, "labels": [{"label": "a", "value": "2"}],
                                     "containerLogs": "y"}}}
    d = drift.classify(step)
    assert d is not None and d.changed == ["labels[0].value"]


def test_volatile_outputs_and_stack_and_providers_are_ignored():
    step = {"op": "refresh", "urn": "urn:pulumi:dev::p::docker:index/container:Container::web",
            "oldState": {"outputs": {"containerLogs": "x", "exitCode": 0}},
            "newState": {"outputs": {"containerLogs": "y", "exitCode": 1}}}
    assert drift.classify(step) is None
    assert drift.classify({"op": "update", "urn": "urn:pulumi:dev::p::pulumi:pulumi:Stack::p-dev"}) is None
    assert drift.classify({"op": "update", "urn": "urn:pulumi:dev::p::pulumi:providers:docker::d"}) is None


def test_main(tmp_path, capsys):
    assert drift.main([str(FIXTURES / "refresh-drift.json"), "--stack", "dev"]) == drift.EXIT_DRIFT
    assert "DRIFT in stack dev" in capsys.readouterr().out
    bad = tmp_path / "x.json"
    bad.write_text("nope")
    assert drift.main([str(bad)]) == drift.EXIT_BAD_INPUT
