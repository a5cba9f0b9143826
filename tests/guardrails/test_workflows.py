"""The GitHub workflows are safe to run on code nobody has reviewed (docs/guardrails.md, "What a
PR preview may touch"): checked by zizmor and actionlint, with no finding left unexplained, and by
this project's own rule on secrets: a pull_request run holds no prod credential.

zizmor comes from requirements-dev.txt (the venv); actionlint is built by scripts/setup into the
toolchain's bin directory. Under CI=true a missing tool fails (tests/prerequisites.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import REPO, TOOLCHAIN_BIN, unavailable

WORKFLOWS = REPO / ".github" / "workflows"
ACTIONLINT_VERSION = re.search(r"^VERSION=(\S+)$", (REPO / "scripts" / "install-actionlint").read_text(), re.M).group(1)

# Environments holding prod secrets; GitHub enforces their protection (docs/guardrails.md).
PROD_ENVIRONMENTS = {"prod", "prod-drift"}
PR_TRIGGERS = {"pull_request", "pull_request_target"}


def workflow_files() -> list[Path]:
    files = sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))
    assert files, f"no workflows under {WORKFLOWS}"
    return files


def load(path: Path) -> dict:
    wf = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True
    wf["on"] = wf.pop(True, wf.get("on"))
    return wf


def triggers(wf: dict) -> set[str]:
    on = wf["on"]
    if isinstance(on, str):
        return {on}
    return set(on)


def secrets_of(job: dict) -> set[str]:
    return set(re.findall(r"secrets\.([A-Za-z0-9_]+)", yaml.safe_dump(job)))


def tool(name: str, *extra_dirs: Path) -> str:
    path = os.pathsep.join([*(str(d) for d in extra_dirs), os.environ.get("PATH", "")])
    found = shutil.which(name, path=path)
    if found is None:
        unavailable(f"no {name} (scripts/setup installs it)")
    return found


def test_zizmor_finds_nothing():
    zizmor = tool("zizmor", Path(sys.executable).parent)
    proc = subprocess.run([zizmor, "--offline", "--no-progress", str(WORKFLOWS)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0 and "No findings to report" in proc.stdout, (
        "zizmor findings (fix them, or justify one inline with `# zizmor: ignore[rule]` and the reason):\n"
        + proc.stdout + proc.stderr)


def test_actionlint_finds_nothing():
    actionlint = tool("actionlint", TOOLCHAIN_BIN)
    version = subprocess.run([actionlint, "-version"], capture_output=True, text=True).stdout
    assert version.splitlines()[0].strip() == f"v{ACTIONLINT_VERSION}", version
    # shellcheck on PATH makes actionlint check every `run:` script too (the render tier needs it).
    proc = subprocess.run([actionlint, "-no-color", *map(str, workflow_files())],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, "actionlint findings:\n" + proc.stdout + proc.stderr


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_with_its_version(path):
    for n, line in enumerate(path.read_text().splitlines(), 1):
        m = re.match(r"\s*(?:-\s+)?uses:\s*(\S+)(.*)$", line)
        if not m or m.group(1).startswith("./"):
            continue
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", m.group(1)), f"{path.name}:{n}: not pinned to a commit: {line.strip()}"
        assert re.search(r"#\s*v\d+(\.\d+)*\b", m.group(2)), f"{path.name}:{n}: say which version the commit is (# vX.Y.Z)"


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_least_privilege_and_no_persisted_credentials(path):
    wf = load(path)
    assert wf.get("permissions") == {}, f"{path.name}: workflow-level `permissions: {{}}`; grant per job"
    for name, job in wf["jobs"].items():
        assert "permissions" in job, f"{path.name}: job {name} states its own permissions"
        assert all(v in ("read", "write", "none") for v in job["permissions"].values())
        for step in job.get("steps", []):
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert (step.get("with") or {}).get("persist-credentials") is False, \
                    f"{path.name}: job {name}: checkout with persist-credentials: false"


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_prod_secrets_only_behind_a_protected_environment(path):
    """A pull_request run executes the PR's code: it may hold dev-only secrets (DEV_*) and nothing
    else; every other secret is read only by jobs in a prod environment, which GitHub protects
    (required reviewers / main only), and no PR-triggered workflow names such an environment."""
    wf = load(path)
    on_pr = bool(triggers(wf) & PR_TRIGGERS)
    assert "pull_request_target" not in triggers(wf), f"{path.name}: pull_request_target runs with the base's secrets"
    for name, job in wf["jobs"].items():
        env = job.get("environment")
        env = env.get("name") if isinstance(env, dict) else env
        secrets = secrets_of(job) - {"GITHUB_TOKEN"}
        if on_pr:
            assert env not in PROD_ENVIRONMENTS, f"{path.name}: job {name} runs PR code in {env}"
            assert all(s.startswith("DEV_") for s in secrets), f"{path.name}: job {name} gives PR code {sorted(secrets)}"
        elif secrets - {s for s in secrets if s.startswith("DEV_")}:
            assert env in PROD_ENVIRONMENTS, f"{path.name}: job {name} reads {sorted(secrets)} outside a protected environment"


def test_the_secret_rule_catches_a_prod_secret_in_a_pr_job(tmp_path):
    """The rule above fails on a planted pull_request job holding the prod passphrase."""
    bad = tmp_path / "bad.yml"
    bad.write_text("on: pull_request\npermissions: {}\njobs:\n  p:\n    permissions: {}\n    runs-on: x\n"
                   "    env:\n      P: ${{ secrets.PULUMI_CONFIG_PASSPHRASE }}\n    steps: [{run: 'true'}]\n")
    with pytest.raises(AssertionError, match="PULUMI_CONFIG_PASSPHRASE"):
        test_prod_secrets_only_behind_a_protected_environment(bad)
