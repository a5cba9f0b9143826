"""Shared by the guardrails tests: repo paths and the e2e prerequisite check."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _docker_ok() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def require_engine():
    """e2e needs pulumi (from scripts/pulumi-env.sh) and a docker engine: under CI=true a missing
    one FAILS the test, elsewhere it is skipped with the reason."""
    env_script = REPO / "scripts" / "pulumi-env.sh"
    reasons = []
    if not env_script.exists():
        reasons.append("scripts/pulumi-env.sh missing (toolchain not installed)")
    else:
        probe = subprocess.run(["bash", "-c", f"source {env_script} >/dev/null 2>&1 && command -v pulumi"],
                               capture_output=True, text=True)
        if probe.returncode != 0:
            reasons.append("pulumi CLI not found after sourcing scripts/pulumi-env.sh "
                           "(run scripts/install-pulumi)")
    if not _docker_ok():
        reasons.append("no docker engine answers (run scripts/start-dockerd)")
    if reasons:
        message = "; ".join(reasons)
        if os.environ.get("CI") == "true":
            pytest.fail(f"e2e prerequisites missing under CI: {message}")
        pytest.skip(message)
