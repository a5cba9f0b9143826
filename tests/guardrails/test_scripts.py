"""The guardrail scripts' own logic (arguments, exit codes, messages, plan handling), with a
stand-in `pulumi` first on PATH (via AI_MEETING_CACHE, which scripts/pulumi-env.sh puts first).
The real engine runs in test_e2e_guardrails.py."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.prerequisites import unavailable

from guardrails_env import REPO

FIXTURES = Path(__file__).parent / "fixtures"

FAKE_PULUMI = r"""#!/usr/bin/env bash
# Stand-in pulumi: logs its arguments, answers from files named by FAKE_* variables.
printf '%s\n' "$*" >>"$FAKE_LOG"
case " $* " in
  *" preview "*"--json"*) cat "${FAKE_PREVIEW_JSON:-/dev/null}"; exit "${FAKE_RC:-0}" ;;
  *" refresh "*"--json"*) cat "${FAKE_REFRESH_JSON:-/dev/null}"; exit "${FAKE_RC:-0}" ;;
  *" refresh "*) echo "~ docker:index/container:Container api-1 update [diff: ~memory]"; exit 0 ;;
  *" preview "*"--save-plan"*)
    plan=$(printf '%s\n' "$@" | grep -A1 -x -- --save-plan | tail -n1)
    [[ ${FAKE_RC:-0} == 0 ]] && echo '{"resourcePlans": {}}' >"$plan"
    echo "Previewing update (fake)"; exit "${FAKE_RC:-0}" ;;
  *" up "*) printf '%s\n' "${FAKE_UP_OUT:-Update complete}"; exit "${FAKE_RC:-0}" ;;
  *" stack output releases "*) printf '%s\n' "${FAKE_RELEASES:-}"; exit 0 ;;
  *" stack export "*"--file"*) cp "$FAKE_STATE" "${@: -1}"; exit 0 ;;
  *" stack import "*"--file"*) cp "${@: -1}" "$FAKE_IMPORTED"; exit 0 ;;
  *) echo "fake pulumi: $*"; exit "${FAKE_RC:-0}" ;;
esac
"""


@pytest.fixture
def fake(tmp_path):
    bin_dir = tmp_path / "cache" / "toolchain" / "bin"
    bin_dir.mkdir(parents=True)
    pulumi = bin_dir / "pulumi"
    pulumi.write_text(FAKE_PULUMI)
    pulumi.chmod(pulumi.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "pulumi.log"
    log.touch()
    env = {
        **os.environ,
        "AI_MEETING_CACHE": str(tmp_path / "cache"),
        "PULUMI_BACKEND_URL": f"file://{tmp_path / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": "x",
        "PLAN_DIR": str(tmp_path / "plans"),
        "PULUMI_PROJECT_DIR": str(tmp_path),
        "FAKE_LOG": str(log),
    }
    env.pop("ALLOW_STATEFUL_REPLACE", None)

    def run(script, *args, **extra):
        proc = subprocess.run([str(REPO / "scripts" / script), *args], env={**env, **extra},
                              capture_output=True, text=True, timeout=60)
        proc.calls = log.read_text().splitlines()
        return proc

    run.tmp = tmp_path
    return run


def test_preview_runs_diff_with_the_policy_pack(fake):
    p = fake("preview", "dev", "--refresh")
    assert p.returncode == 0, p.stderr
    [call] = p.calls
    assert call.startswith("preview --stack dev --diff")
    assert f"--policy-pack {REPO}/policy" in call and call.endswith("--refresh")


def test_scripts_need_a_stack(fake):
    for script in ("preview", "plan", "apply-plan", "guard-stateful", "drift", "rollback"):
        p = fake(script)
        assert p.returncode != 0 and "usage" in p.stderr, script


def test_plan_saves_and_apply_plan_applies_once(fake):
    p = fake("plan", "prod")
    assert p.returncode == 0, p.stderr
    plan = fake.tmp / "plans" / "prod.json"
    assert plan.exists()
    assert f"--save-plan {plan}" in p.calls[0] and "--policy-pack" in p.calls[0]
    a = fake("apply-plan", "prod")
    assert a.returncode == 0, a.stderr
    up = a.calls[-1]
    assert up.startswith("up --stack prod --plan") and "--yes" in up and "--policy-pack" in up
    assert not plan.exists() and (fake.tmp / "plans" / "prod.json.applied").exists()


def test_failed_preview_leaves_no_plan(fake):
    p = fake("plan", "prod", FAKE_RC="255")
    assert p.returncode == 1 and "no plan saved" in p.stderr
    assert not (fake.tmp / "plans" / "prod.json").exists()


def test_apply_plan_without_a_plan_fails_clearly(fake):
    a = fake("apply-plan", "prod")
    assert a.returncode == 1 and "run scripts/plan prod first" in a.stderr
    assert a.calls == []


def test_stale_plan_is_refused_clearly(fake):
    assert fake("plan", "prod").returncode == 0
    out = ("error: resource urn:pulumi:prod::ai-meeting::docker:index/container:Container::api-1 "
           "violates plan: properties changed: ~~image")
    a = fake("apply-plan", "prod", FAKE_RC="255", FAKE_UP_OUT=out)
    assert a.returncode == 255
    assert "REFUSED" in a.stderr and "no longer matches the saved plan" in a.stderr
    assert "api-1 violates plan" in a.stdout
    assert (fake.tmp / "plans" / "prod.json").exists(), "a refused plan is kept for inspection"


def test_guard_blocks_and_names_resources(fake):
    g = fake("guard-stateful", "dev", FAKE_PREVIEW_JSON=str(FIXTURES / "preview-volume-replace.json"))
    assert g.returncode == 3
    assert "docker:index/volume:Volume::postgres-data" in g.stderr and "BLOCKED" in g.stderr
    assert g.calls[0].startswith("preview --stack dev --json")


def test_guard_allow_flag_is_not_passed_to_pulumi(fake):
    g = fake("guard-stateful", "dev", "--allow-stateful",
             FAKE_PREVIEW_JSON=str(FIXTURES / "preview-volume-replace.json"))
    assert g.returncode == 0, g.stderr
    assert "--allow-stateful" not in g.calls[0]


def test_guard_allow_env(fake):
    doc = json.loads((FIXTURES / "preview-volume-replace.json").read_text())
    urns = [s["urn"] for s in doc["steps"] if not s["urn"].endswith(("::api-1", "::scratch"))]
    g = fake("guard-stateful", "dev", FAKE_PREVIEW_JSON=str(FIXTURES / "preview-volume-replace.json"),
             ALLOW_STATEFUL_REPLACE=",".join(urns))
    assert g.returncode == 0, g.stderr


def test_guard_passes_safe_changes(fake):
    g = fake("guard-stateful", "dev", FAKE_PREVIEW_JSON=str(FIXTURES / "preview-api-image.json"))
    assert g.returncode == 0 and "no stateful resource" in g.stdout


def test_guard_reports_a_failed_preview(fake, tmp_path):
    failed = tmp_path / "failed.json"
    failed.write_text(json.dumps({"steps": [], "diagnostics": [
        {"urn": "urn:x", "message": "Policy violation: [ports-loopback-only] ...", "severity": "error"}]}))
    g = fake("guard-stateful", "dev", FAKE_PREVIEW_JSON=str(failed), FAKE_RC="255")
    assert g.returncode == 255 and "preview of stack dev failed" in g.stderr
    assert "ports-loopback-only" in g.stderr


def test_drift_exit_codes(fake):
    clean = fake("drift", "dev", FAKE_REFRESH_JSON=str(FIXTURES / "refresh-clean.json"))
    assert clean.returncode == 0 and "none" in clean.stdout
    assert "--preview-only" in clean.calls[0]
    drifted = fake("drift", "dev", FAKE_REFRESH_JSON=str(FIXTURES / "refresh-drift.json"))
    assert drifted.returncode == 2
    assert "api-1: changed outside Pulumi: memory" in drifted.stdout
    assert "[diff: ~memory]" in drifted.stderr  # the human-readable diff follows


def test_pr_check_skips_remote_stacks_and_checks_local_ones(fake):
    (fake.tmp / "Pulumi.dev.yaml").write_text("config: {}\n")
    (fake.tmp / "Pulumi.prod.yaml").write_text("config:\n  x: ssh://deploy@server\n")
    p = fake("pr-check", PR_CHECK_PYTHON="/bin/true",
             FAKE_PREVIEW_JSON=str(FIXTURES / "preview-api-image.json"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SKIP stack prod" in p.stdout
    assert [c.split()[:3] for c in p.calls] == [["preview", "--stack", "dev"]] * 2


def test_pr_check_fails_when_the_guard_blocks(fake):
    (fake.tmp / "Pulumi.dev.yaml").write_text("config: {}\n")
    p = fake("pr-check", PR_CHECK_PYTHON="/bin/true",
             FAKE_PREVIEW_JSON=str(FIXTURES / "preview-volume-replace.json"))
    assert p.returncode == 1 and "dev:guard-stateful" in p.stderr


@pytest.mark.parametrize("script", ["preview", "plan", "apply-plan", "guard-stateful", "drift", "pr-check", "rollback", "recover-server"])
def test_shellcheck_clean(script):
    import shutil
    if not shutil.which("shellcheck"):
        unavailable("shellcheck not installed")
    p = subprocess.run(["shellcheck", "-x", f"scripts/{script}"], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout


RELEASES = json.dumps([
    {"api": "reg/api:3", "web": "reg/web:2", "deployed_at": "2026-12-03T10:00:00+00:00"},
    {"api": "reg/api:2", "web": "reg/web:2", "deployed_at": "2026-12-02T10:00:00+00:00"},
    {"api": "reg/api:1", "web": "reg/web:1", "deployed_at": "2026-12-01T10:00:00+00:00"},
])


def test_rollback_sets_the_previous_release_and_runs_up(fake):
    p = fake("rollback", "prod", FAKE_RELEASES=RELEASES)
    assert p.returncode == 0, p.stderr
    assert p.calls[1:] == ["config set --path images.api reg/api:2 --stack prod",
                           "config set --path images.web reg/web:2 --stack prod",
                           "up --yes --skip-preview --stack prod --non-interactive"], p.calls
    two_back = fake("rollback", "prod", "--to", "2", FAKE_RELEASES=RELEASES)
    assert "config set --path images.api reg/api:1 --stack prod" in two_back.calls


def test_rollback_refuses_what_it_cannot_do_and_lists_without_changing(fake):
    none = fake("rollback", "prod")
    assert none.returncode == 1 and "no release history" in none.stderr
    past = fake("rollback", "prod", "--to", "3", FAKE_RELEASES=RELEASES)
    assert past.returncode != 0 and "goes past the oldest" in past.stderr
    assert not any(c.startswith(("config set", "up ")) for c in past.calls)
    bad = fake("rollback", "prod", "--to", "x")
    assert bad.returncode == 2 and "--to takes" in bad.stderr
    listed = fake("rollback", "prod", "--list", FAKE_RELEASES=RELEASES)
    assert listed.returncode == 0 and "(running)" in listed.stdout and "reg/api:1" in listed.stdout
    assert not any(c.startswith(("config set", "up ")) for c in listed.calls)


def _resource(urn_name: str, type_: str, **extra) -> dict:
    return {"urn": f"urn:pulumi:prod::ai-meeting::{type_}::{urn_name}", "type": type_, **extra}


def test_recover_server_forgets_what_ran_on_the_old_server_and_keeps_the_secrets(fake, tmp_path):
    stack = _resource("prod", "pulumi:pulumi:Stack")
    comp = _resource("ai-meeting", "ai-meeting:stack:AiMeeting", parent=stack["urn"])
    boot = _resource("bootstrap-docker", "command:remote:Command", parent=comp["urn"])
    docker_provider = _resource("docker", "pulumi:providers:docker", dependencies=[boot["urn"]])
    password = _resource("db-password", "random:index/randomPassword:RandomPassword", parent=comp["urn"], protect=True)
    volume = _resource("postgres-data", "docker:index/volume:Volume", protect=True, parent=comp["urn"])
    container = _resource("postgres", "docker:index/container:Container", dependencies=[volume["urn"], password["urn"]],
                          propertyDependencies={"envs": [password["urn"]], "volumes": [volume["urn"]]})
    cert = _resource("tls-cert", "tls:index/selfSignedCert:SelfSignedCert", dependencies=[boot["urn"]])
    upload = _resource("api-image-upload", "command:local:Command")
    state = {"version": 3, "deployment": {"resources": [stack, comp, boot, docker_provider, password, volume, container,
                                                         cert, upload], "pending_operations": [{"type": "creating"}]}}
    (tmp_path / "state.json").write_text(json.dumps(state))
    env = {"FAKE_STATE": str(tmp_path / "state.json"), "FAKE_IMPORTED": str(tmp_path / "imported.json")}

    shown = fake("recover-server", "prod", **env)
    assert shown.returncode == 0 and "nothing changed" in shown.stdout, shown.stdout + shown.stderr
    assert not (tmp_path / "imported.json").exists() and not any("stack import" in c for c in shown.calls)
    assert "5 resources of the old server to forget; 4 kept (1 generated secrets)" in shown.stdout, shown.stdout

    done = fake("recover-server", "prod", "--yes", **env)
    assert done.returncode == 0, done.stdout + done.stderr
    kept = json.loads((tmp_path / "imported.json").read_text())["deployment"]
    assert [r["type"] for r in kept["resources"]] == ["pulumi:pulumi:Stack", "ai-meeting:stack:AiMeeting",
                                                      "random:index/randomPassword:RandomPassword",
                                                      "tls:index/selfSignedCert:SelfSignedCert"]
    assert kept["resources"][3]["dependencies"] == [] and "pending_operations" not in kept
    assert kept["resources"][2]["protect"] is True  # the secret stays protected
    backups = list(tmp_path.glob(".recover-server-prod-*.json"))
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == state
    assert stat.S_IMODE(backups[0].stat().st_mode) == 0o600
    assert fake("recover-server", "prod", "--no", **env).returncode == 2
