"""Unit tests of the preview-JSON parsing behind scripts/guard-stateful (no engine needed)."""

import json
from pathlib import Path

import pytest

from ai_meeting_policy import stateful_guard as g

FIXTURES = Path(__file__).parent / "fixtures"


def load(name):
    return json.loads((FIXTURES / name).read_text())


def names(findings):
    return sorted(f.name for f in findings)


def test_noop_and_stateless_changes_pass():
    assert g.find_stateful_changes(load("preview-noop.json")) == []
    assert g.find_stateful_changes(load("preview-api-image.json")) == []


def test_volume_replace_secret_replace_data_mount_and_delete_found():
    findings = g.find_stateful_changes(load("preview-volume-replace.json"))
    kinds = {f.name: f.kind for f in findings}
    assert kinds == {"postgres-data": "data volume", "postgres": "postgres data mount",
                     "db-password": "secret", "redis-data": "data volume"}
    vol = next(f for f in findings if f.name == "postgres-data")
    assert vol.op == "replace" and vol.type == "docker:index/volume:Volume"
    assert "name" in vol.detail


def test_blocked_message_names_each_resource_and_exits_3():
    findings = g.find_stateful_changes(load("preview-volume-replace.json"))
    code, message = g.report(findings, set(), False, "dev")
    assert code == g.EXIT_BLOCKED
    for f in findings:
        assert f.urn in message
    assert "ALLOW_STATEFUL_REPLACE=" in message
    assert "api-1" not in message.split("ALLOW_STATEFUL_REPLACE=")[0]


def test_allow_some_still_blocks_the_rest():
    findings = g.find_stateful_changes(load("preview-volume-replace.json"))
    vol = next(f for f in findings if f.name == "postgres-data")
    code, message = g.report(findings, {vol.urn}, False)
    assert code == g.EXIT_BLOCKED
    assert "[allowed] replace" in message
    assert message.count("[BLOCKED]") == 3


def test_allow_all_by_urn_name_or_flag():
    findings = g.find_stateful_changes(load("preview-volume-replace.json"))
    assert g.report(findings, {f.urn for f in findings}, False)[0] == g.EXIT_OK
    assert g.report(findings, {f.name for f in findings}, False)[0] == g.EXIT_OK
    assert g.report(findings, set(), True)[0] == g.EXIT_OK


def test_protected_resource_of_any_type_counts():
    step = {"op": "delete", "urn": "urn:pulumi:prod::ai-meeting::tls:index/privateKey:PrivateKey::tls-key",
            "oldState": {"type": "tls:index/privateKey:PrivateKey", "protect": True, "inputs": {}}}
    [f] = g.find_stateful_changes({"steps": [step]})
    assert f.kind == "protected resource"


def test_component_parented_urn_type_is_the_last_segment():
    urn = ("urn:pulumi:dev::ai-meeting::ai-meeting:postgres:Postgres$docker:index/volume:Volume"
           "::postgres-data")
    f = g.Finding(urn, "replace", "data volume", "")
    assert f.type == "docker:index/volume:Volume" and f.name == "postgres-data"
    step = {"op": "replace", "urn": urn,
            "oldState": {"inputs": {"labels": [{"label": "ai-meeting.data", "value": "true"}]}}}
    assert g.classify(step).kind == "data volume"


def test_postgres_container_replace_without_mount_change_is_fine():
    step = {"op": "replace", "urn": "urn:pulumi:dev::ai-meeting::docker:index/container:Container::postgres",
            "diffReasons": ["image"],
            "oldState": {"type": "docker:index/container:Container",
                         "inputs": {"labels": [{"label": "ai-meeting.service", "value": "postgres"}],
                                    "volumes": [{"volumeName": "v"}]}},
            "newState": {"type": "docker:index/container:Container",
                         "inputs": {"labels": [{"label": "ai-meeting.service", "value": "postgres"}],
                                    "volumes": [{"volumeName": "v"}], "image": "pg:15"}}}
    assert g.classify(step) is None


@pytest.mark.parametrize("allow_env,argv,expected", [
    ("", [], g.EXIT_BLOCKED),
    ("", ["--allow-stateful"], g.EXIT_OK),
    ("postgres-data,postgres,db-password,redis-data", [], g.EXIT_OK),
    ("postgres-data", [], g.EXIT_BLOCKED),
])
def test_main_exit_codes(monkeypatch, capsys, allow_env, argv, expected):
    monkeypatch.setenv("ALLOW_STATEFUL_REPLACE", allow_env)
    assert g.main([str(FIXTURES / "preview-volume-replace.json"), *argv]) == expected


def test_main_tolerates_log_lines_and_rejects_garbage(tmp_path, capsys):
    noisy = tmp_path / "p.json"
    noisy.write_text("warning: something\n" + (FIXTURES / "preview-noop.json").read_text())
    assert g.main([str(noisy)]) == g.EXIT_OK
    bad = tmp_path / "bad.json"
    bad.write_text("error: no stack selected")
    assert g.main([str(bad)]) == g.EXIT_BAD_INPUT
