"""Shared by the guardrails tests: repo paths and the e2e prerequisite check."""

import json
import shutil
import subprocess
from pathlib import Path


from tests.prerequisites import unavailable

REPO = Path(__file__).resolve().parents[2]


def _docker_ok() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def _missing_plugins(env_script: Path) -> list[str]:
    """The language host and the provider plugins the e2e programs use."""
    missing = []
    host = subprocess.run(["bash", "-c", f"source {env_script} >/dev/null 2>&1 && "
                           "command -v pulumi-language-python"], capture_output=True, text=True)
    if host.returncode != 0:
        missing.append("no pulumi-language-python (python language host) on PATH")
    listed = subprocess.run(["bash", "-c", f"source {env_script} >/dev/null 2>&1 && pulumi plugin ls --json"],
                            capture_output=True, text=True)
    try:
        names = {p.get("name") for p in json.loads(listed.stdout or "[]") if p.get("kind") == "resource"}
    except ValueError:
        names = set()
    for plugin in ("docker", "random"):
        if plugin not in names:
            missing.append(f"no '{plugin}' resource plugin installed (pulumi plugin ls)")
    return missing


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
        else:
            reasons += _missing_plugins(env_script)
    if not _docker_ok():
        reasons.append("no docker engine answers (run scripts/start-dockerd)")
    if reasons:
        unavailable("; ".join(reasons))


def require_cli() -> None:
    """Only the Pulumi CLI (no language host or plugins): fail under CI=true, else skip."""
    env_script = REPO / "scripts" / "pulumi-env.sh"
    probe = subprocess.run(["bash", "-c", f"source {env_script} >/dev/null 2>&1 && command -v pulumi"],
                           capture_output=True, text=True) if env_script.exists() else None
    if probe is None or probe.returncode != 0:
        unavailable("pulumi CLI not found after sourcing scripts/pulumi-env.sh (run scripts/install-pulumi)")
