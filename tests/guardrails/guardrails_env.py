"""Shared by the guardrails tests and fixtures/capture.py: repo paths, the e2e prerequisite
check, an isolated engine (throw-away file:// backend) and the tiny test images."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.support import REPO, docker, require_engine, unavailable  # noqa: F401 (docker, require_engine: re-exported)

PROGRAMS = Path(__file__).parent / "programs"
TIMEOUT = 600


def require_cli() -> None:
    """Only the Pulumi CLI (no language host or plugins): fail under CI=true, else skip."""
    env_script = REPO / "scripts" / "pulumi-env.sh"
    probe = subprocess.run(["bash", "-c", f"source {env_script} >/dev/null 2>&1 && command -v pulumi"],
                           capture_output=True, text=True) if env_script.exists() else None
    if probe is None or probe.returncode != 0:
        unavailable("pulumi CLI not found after sourcing scripts/pulumi-env.sh (run scripts/install-pulumi)")


class Engine:
    """Runs pulumi and the repo's scripts against an isolated backend."""

    def __init__(self, tmp: Path, prefix: str):
        self.tmp = tmp
        self.prefix = prefix
        state = tmp / "state"
        state.mkdir()
        self.env = {
            **os.environ,
            "PULUMI_BACKEND_URL": f"file://{state}",
            "PULUMI_CONFIG_PASSPHRASE": "guardrails-e2e-passphrase",
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PLAN_DIR": str(tmp / "plans"),
            "NO_COLOR": "1",
        }
        for key in ("PULUMI_CONFIG_PASSPHRASE_FILE", "AI_MEETING_ENVIRONMENT", "AI_MEETING_POLICY_ENFORCEMENT",
                    "ALLOW_STATEFUL_REPLACE", "PULUMI_PROJECT_DIR"):
            self.env.pop(key, None)
        self.images: dict[str, str] = {}

    def program(self, name: str, source: Path | None = None) -> Path:
        """Copy a program to the temp dir, pointing its virtualenv at the repo's."""
        dest = self.tmp / name
        shutil.copytree(source or PROGRAMS / name, dest,
                        ignore=shutil.ignore_patterns("Pulumi.*.yaml", "__pycache__"))
        text = (dest / "Pulumi.yaml").read_text()
        text = re.sub(r"virtualenv: .*", f"virtualenv: {REPO / '.venv'}", text)
        (dest / "Pulumi.yaml").write_text(text)
        return dest

    def run(self, args: str, cwd: Path, env: dict | None = None, check: bool = False, timeout=TIMEOUT):
        """A shell command with pulumi-env.sh sourced and our backend forced."""
        overrides = {k: self.env[k] for k in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE")}
        exports = " ".join(f"{k}='{v}'" for k, v in overrides.items())
        script = (f"source {REPO}/scripts/pulumi-env.sh >/dev/null; export {exports}; "
                  f"unset PULUMI_CONFIG_PASSPHRASE_FILE; {args}")
        proc = subprocess.run(["bash", "-c", script], cwd=cwd, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"`{args}` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def script(self, name: str, *args: str, cwd: Path, env: dict | None = None):
        """One of the repo's scripts, aimed at the program in `cwd`."""
        quoted = " ".join(f"'{a}'" for a in args)
        return self.run(f"{REPO}/scripts/{name} {quoted}", cwd=cwd,
                        env={"PULUMI_PROJECT_DIR": str(cwd), **(env or {})})

    def config(self, cwd: Path, stack: str, **values: str) -> None:
        for key, value in values.items():
            self.run(f"pulumi config set --stack {stack} --path '{key}' '{value}'", cwd=cwd, check=True)


def build_test_images(repo: str) -> dict[str, str]:
    """A tiny image from the host's own /bin/sh, sleep and true (no registry needed), tagged
    base, app-1, app-2, app-3 with distinct image ids. Returns ref -> image id."""
    root = Path(f"/tmp/{repo.replace('/', '-')}-rootfs")
    shutil.rmtree(root, ignore_errors=True)
    files = {"/bin/sh", "/bin/sleep", "/bin/true"}
    for binary in list(files):
        ldd = subprocess.run(["ldd", os.path.realpath(binary)], capture_output=True, text=True).stdout
        files |= set(re.findall(r"(/\S+\.so[.\d]*)", ldd))
    for f in files:
        dest = root / f.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(f), dest)
    tar = root.with_suffix(".tar")
    subprocess.run(["tar", "-C", str(root), "-cf", str(tar), "."], check=True)
    ids = {}
    for tag in ("base", "app-1", "app-2", "app-3"):
        ref = f"{repo}:{tag}"
        docker("import", "--change", f"LABEL guardrails-e2e-variant={tag}", str(tar), ref)
        ids[ref] = docker("image", "inspect", "-f", "{{.Id}}", ref).stdout.strip()
    shutil.rmtree(root, ignore_errors=True)
    tar.unlink()
    return ids


def cleanup(prefix: str, images) -> None:
    for name_filter in (f"label=guardrails-e2e={prefix}", f"name={prefix}-"):
        ids = docker("ps", "-aq", "--filter", name_filter).stdout.split()
        if ids:
            docker("rm", "-f", *ids, check=False)
    vols = docker("volume", "ls", "-q", "--filter", f"label=guardrails-e2e={prefix}").stdout.split()
    if vols:
        docker("volume", "rm", "-f", *vols, check=False)
    if images:
        docker("rmi", "-f", *images, check=False)
