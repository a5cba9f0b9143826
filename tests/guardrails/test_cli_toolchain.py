"""What the real Pulumi CLI alone can confirm (no language host or provider plugins needed):
the scripts' flags are accepted, the self-hosted backend's fully qualified stack name that
StackReference uses, and drift on a real (empty) refresh. The rest runs in test_e2e_guardrails."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from guardrails_env import REPO, require_cli

pytestmark = pytest.mark.toolchain

PROGRAM = Path(__file__).parent / "programs" / "app"
REJECTED_ARGS = re.compile(r"unknown (flag|shorthand|command)|invalid argument|flag needs an argument", re.I)


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    require_cli()
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "state").mkdir()
    prog = tmp / "prog"
    shutil.copytree(PROGRAM, prog, ignore=shutil.ignore_patterns("Pulumi.*.yaml", "__pycache__"))
    text = (prog / "Pulumi.yaml").read_text()
    (prog / "Pulumi.yaml").write_text(re.sub(r"virtualenv: .*", f"virtualenv: {REPO / '.venv'}", text))
    env = {**os.environ, "PULUMI_BACKEND_URL": f"file://{tmp / 'state'}",
           "PULUMI_CONFIG_PASSPHRASE": "cli-test", "PULUMI_PROJECT_DIR": str(prog),
           "PLAN_DIR": str(tmp / "plans")}
    env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)

    def run(cmd: str, **extra):
        return subprocess.run(["bash", "-c", f"source {REPO}/scripts/pulumi-env.sh >/dev/null; {cmd}"],
                              cwd=prog, env={**env, **extra}, capture_output=True, text=True, timeout=300)

    assert run("pulumi stack init cli --non-interactive").returncode == 0
    run.tmp = tmp
    return run


def test_file_backend_fully_qualified_stack_name_is_organization_project_stack(cli):
    out = cli("pulumi stack --stack cli --show-name --fully-qualify-stack-names")
    assert out.stdout.strip() == "organization/ai-meeting/cli", out.stderr


@pytest.mark.parametrize("script", ["preview", "plan", "guard-stateful", "drift"])
def test_the_real_cli_accepts_every_flag_the_scripts_pass(cli, script):
    p = cli(f"{REPO}/scripts/{script} cli")
    out = p.stdout + p.stderr
    assert not REJECTED_ARGS.search(out), out
    assert "Usage:" not in out, out


def test_apply_plan_flags_accepted(cli):
    plans = cli.tmp / "plans"
    plans.mkdir(exist_ok=True)
    (plans / "cli.json").write_text("{}")
    p = cli(f"{REPO}/scripts/apply-plan cli")
    out = p.stdout + p.stderr
    assert not REJECTED_ARGS.search(out) and "Usage:" not in out, out


def test_drift_on_a_real_refresh_of_an_empty_stack(cli):
    raw = cli("pulumi refresh --stack cli --preview-only --json --non-interactive")
    assert raw.returncode == 0, raw.stderr
    assert "steps" not in json.loads(raw.stdout) or json.loads(raw.stdout)["steps"] in ([], None)
    p = cli(f"{REPO}/scripts/drift cli")
    assert p.returncode == 0 and "drift: none" in p.stdout, p.stdout + p.stderr
