"""The reliability tier's second dev stack (`rb`, prefix aim-rb): deployed once by `pulumi up`
and shared by the modules that preview it with bad config, scan its TLS and cut its datastores
off the network. Its own ports, so it can run beside the other tiers' stacks."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from tests.e2e.engine import PulumiProject, require_engine, require_local_images

STACK = "rb"
PREFIX = "aim-rb"
HTTP, HTTPS = 28080, 28443
LOOPBACK = {"postgres": 25432, "redis": 26379, "minio": 29000, "minio_console": 29001, "api": 23000}
# Two replicas: nginx's upstream then has something to mark down (a one-server upstream
# ignores max_fails), which the partition test needs to be meaningful.
API = {"replicas": 2, "migrate_command": ["ai-meeting-api", "migrate"], "start_timeout": 60}


def deploy(workdir: Path) -> PulumiProject:
    env = require_engine()
    require_local_images()
    project = PulumiProject(workdir, STACK, env, stack_file="Pulumi.dev.yaml")
    project.configure(name_prefix=PREFIX, nginx={"bind_address": "127.0.0.1", "http_port": HTTP, "https_port": HTTPS},
                      loopback_ports=LOOPBACK, api=API)
    project.up()
    return project


def destroy(project: PulumiProject) -> None:
    project.run("destroy", "--yes", "--stack", STACK, "--skip-preview", check=False, timeout=900)
    project.run("stack", "rm", "--yes", "--force", STACK, check=False)


def state_fingerprint(project: PulumiProject) -> dict[str, str]:
    """Every file of the backend (state, backups, history) by sha256, plus `pulumi stack export`."""
    state = project.dir / ".state"
    files = {str(p.relative_to(state)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(state.rglob("*")) if p.is_file()}
    files["<pulumi stack export>"] = hashlib.sha256(
        project.run("stack", "export", "--stack", STACK).stdout.encode()).hexdigest()
    return files


def docker(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, **kw)


def inspect(name: str) -> dict:
    return json.loads(docker("inspect", name).stdout)[0]
