"""The Pulumi engine for tests and bench/: the toolchain's environment, the prerequisites, and
the real Pulumi CLI driven on a copy of this project, with a throwaway local backend.

The copy keeps the repo's stack files untouched (stack init writes an encryption salt into
them) and lets tests change config freely. `.venv` is a symlink to the repo's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.prerequisites import unavailable
from tests.support.paths import REPO
PROJECT_FILES = ("Pulumi.yaml", "__main__.py", "config", "components", "render")


def copy_project(dest: Path) -> None:
    """The program's files (not the stack files, not the state) into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / name)


def toolchain_env() -> dict[str, str]:
    """os.environ with the toolchain's bin first on PATH (AI_MEETING_CACHE read now) and
    scripts/pulumi-env.sh's flags."""
    cache = Path(os.environ.get("AI_MEETING_CACHE", Path.home() / ".cache" / "ai-meeting"))
    env = dict(os.environ)
    env["PATH"] = f"{cache / 'toolchain' / 'bin'}:{env.get('PATH', '')}"
    env.update(PULUMI_SKIP_UPDATE_CHECK="true", PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true")
    return env


def require_engine() -> dict[str, str]:
    """The toolchain's environment, when the CLI, the language host, the four plugins
    (scripts/install-pulumi --check) and a Docker engine are there; else unavailable()."""
    env = toolchain_env()
    if shutil.which("pulumi", path=env["PATH"]) is None:
        unavailable("the pulumi CLI is not installed (run scripts/install-pulumi)")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        unavailable("no Docker engine answers (run scripts/start-dockerd)")
    check = subprocess.run([str(REPO / "scripts" / "install-pulumi"), "--check"], env=env, capture_output=True, text=True)
    if check.returncode != 0:
        unavailable(f"the Pulumi toolchain is incomplete (run scripts/install-pulumi):\n{check.stdout}{check.stderr}")
    return env


def require_local_images(*images: str) -> None:
    """The dev stack's images, or the named ones (scripts/build-local-images; a no-op when they
    are current)."""
    build = subprocess.run([str(REPO / "scripts" / "build-local-images"), *images], capture_output=True, text=True)
    if build.returncode != 0:
        unavailable(f"local images could not be built:\n{build.stdout[-2000:]}\n{build.stderr[-2000:]}")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


class PulumiProject:
    def __init__(self, workdir: Path, stack: str, env: dict[str, str], stack_file: str | None = None):
        self.dir = workdir
        self.stack = stack
        copy_project(workdir)
        (workdir / ".venv").symlink_to(REPO / ".venv")
        if stack_file:
            shutil.copy(REPO / stack_file, workdir / f"Pulumi.{stack}.yaml")
        state = workdir / ".state"
        state.mkdir(mode=0o700)
        self.env = {
            **env,
            "PULUMI_BACKEND_URL": f"file://{state}",
            "PULUMI_CONFIG_PASSPHRASE": "e2e-test-passphrase",
            "AI_MEETING_CACHE": str(workdir / ".cache"),
        }
        self.env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
        # PULUMI_HOME (the plugins) stays as the caller has it: unset, the CLI takes the
        # user's home from the password database, which $HOME need not match.
        self.run("stack", "init", stack)

    def run(self, *args: str, check: bool = True, timeout: int = 900) -> Result:
        proc = subprocess.run(
            ["pulumi", *args, "--non-interactive"] if args[0] not in ("stack", "config") else ["pulumi", *args],
            cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=timeout,
        )
        res = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"pulumi {' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-3000:]}"
            )
        return res

    def stack_config(self) -> dict:
        path = self.dir / f"Pulumi.{self.stack}.yaml"
        return (yaml.safe_load(path.read_text()) or {}).get("config", {})

    def configure(self, **values: object) -> None:
        """Set top-level `ai-meeting:` keys in the stack file (the salt line is kept)."""
        path = self.dir / f"Pulumi.{self.stack}.yaml"
        doc = yaml.safe_load(path.read_text()) if path.exists() else {}
        doc = doc or {}
        doc.setdefault("config", {})
        for key, value in values.items():
            doc["config"][f"ai-meeting:{key}"] = value
        path.write_text(yaml.safe_dump(doc, sort_keys=False))

    def config_set(self, path: str, value: str) -> None:
        """The runbooks' command: `pulumi config set --path 'ai-meeting:<path>' <value>`."""
        self.run("config", "set", "--path", f"ai-meeting:{path}", value, "--stack", self.stack)

    def set_secret(self, path: str, value: str) -> None:
        self.run("config", "set", "--secret", "--path", f"ai-meeting:{path}", "--stack", self.stack, "--", value)

    def up(self, *extra: str) -> Result:
        return self.run("up", "--yes", "--stack", self.stack, "--skip-preview", *extra, timeout=1500)

    def preview(self, *extra: str, check: bool = True) -> Result:
        return self.run("preview", "--stack", self.stack, *extra, check=check)

    def outputs(self, show_secrets: bool = False) -> dict:
        args = ["stack", "output", "--json", "--stack", self.stack] + (["--show-secrets"] if show_secrets else [])
        return json.loads(self.run(*args).stdout)

    def destroy(self) -> Result:
        return self.run("destroy", "--yes", "--stack", self.stack, "--skip-preview", timeout=900)
