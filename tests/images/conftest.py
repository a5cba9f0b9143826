"""Fixtures for tests of the locally built images (scripts/build-local-images).

Every test here runs real containers. Without a Docker engine the tests skip, except under
CI=true, where a missing engine is a failure. Missing images are built (the build script is
idempotent) under CI=true or AI_MEETING_BUILD_IMAGES=1, and otherwise skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PREFIX = "ai-meeting-local"


def pytest_configure(config):
    config.addinivalue_line("markers", "docker: needs a running Docker engine and the local images")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _skip_or_fail(reason: str):
    if _in_ci():
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)


def docker(*args: str, check: bool = True, timeout: float = 120, input: str | None = None):
    """Run `docker ARGS`, return CompletedProcess (text)."""
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, input=input
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} -> {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last error
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last error: {last!r}")


def image_tags(repo: str) -> list[str]:
    out = docker("image", "ls", "--format", "{{.Tag}}", f"{PREFIX}/{repo}").stdout.split()
    return [t for t in out if t != "<none>"]


@pytest.fixture(scope="session")
def docker_engine():
    try:
        proc = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        _skip_or_fail(f"no docker engine: {exc}")
    if proc.returncode != 0:
        _skip_or_fail("no docker engine (`docker info` failed; run scripts/start-dockerd)")
    return True


REQUIRED = ["base:bookworm", "postgres:15", "redis:7", "nginx:1.22", "web:demo-1",
            "api:demo-1", "api:demo-2"]


@pytest.fixture(scope="session")
def local_images(docker_engine):
    def missing():
        miss = [i for i in REQUIRED if docker("image", "inspect", f"{PREFIX}/{i}", check=False).returncode]
        for repo in ("minio", "mc"):
            if not image_tags(repo):
                miss.append(f"{repo}:*")
        return miss

    miss = missing()
    if miss and (_in_ci() or os.environ.get("AI_MEETING_BUILD_IMAGES") == "1"):
        subprocess.run([str(REPO_ROOT / "scripts" / "build-local-images")], check=True, timeout=3600)
        miss = missing()
    core_missing = [m for m in miss if not m.startswith(("minio", "mc"))]
    if core_missing:
        _skip_or_fail(f"local images missing: {', '.join(miss)} (run scripts/build-local-images)")
    images = {
        "postgres": f"{PREFIX}/postgres:15",
        "redis": f"{PREFIX}/redis:7",
        "nginx": f"{PREFIX}/nginx:1.22",
        "web": f"{PREFIX}/web:demo-1",
        "api1": f"{PREFIX}/api:demo-1",
        "api2": f"{PREFIX}/api:demo-2",
    }
    for repo in ("minio", "mc"):
        tags = sorted(image_tags(repo))
        images[repo] = f"{PREFIX}/{repo}:{tags[-1]}" if tags else None
    return images


@pytest.fixture
def with_minio(local_images):
    """local_images, requiring the MinIO server and mc images too."""
    if not (local_images["minio"] and local_images["mc"]):
        _skip_or_fail("minio/mc images missing (scripts/build-local-images builds them with Go)")
    return local_images


class Sandbox:
    """A user network plus the containers and volumes a test creates; removes them all."""

    def __init__(self):
        self.id = uuid.uuid4().hex[:8]
        self.network = f"aimt-{self.id}"
        self.containers: list[str] = []
        self.volumes: list[str] = []
        docker("network", "create", "--label", "ai-meeting-test=1", self.network)

    def name(self, base: str) -> str:
        return f"aimt-{self.id}-{base}"

    def volume(self, base: str) -> str:
        name = self.name(base)
        docker("volume", "create", "--label", "ai-meeting-test=1", name)
        self.volumes.append(name)
        return name

    def run(self, image: str, *cmd: str, name: str, alias: str | None = None, env=None,
            mounts=(), extra=()) -> str:
        """Start a detached container on the sandbox network; return its name."""
        cname = self.name(name)
        args = ["run", "-d", "--name", cname, "--network", self.network,
                "--network-alias", alias or name, "--label", "ai-meeting-test=1"]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        for mount in mounts:
            args += ["-v", mount]
        args += [*extra, image, *cmd]
        self.containers.append(cname)
        docker(*args)
        return cname

    def oneshot(self, image: str, *cmd: str, env=None, mounts=(), entrypoint=None,
                check=True, timeout=120):
        """docker run --rm on the sandbox network; returns CompletedProcess."""
        args = ["run", "--rm", "--network", self.network, "--label", "ai-meeting-test=1"]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        for mount in mounts:
            args += ["-v", mount]
        if entrypoint is not None:
            args += ["--entrypoint", entrypoint]
        return docker(*args, image, *cmd, check=check, timeout=timeout)

    def remove(self, cname: str):
        docker("rm", "-f", "-v", cname, check=False)

    def ip(self, cname: str) -> str:
        out = docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", cname).stdout
        return json.loads(out)[self.network]["IPAddress"]

    def logs(self, cname: str) -> str:
        proc = docker("logs", cname, check=False)
        return proc.stdout + proc.stderr

    def cleanup(self):
        for cname in reversed(self.containers):
            docker("rm", "-f", "-v", cname, check=False)
        for vol in self.volumes:
            docker("volume", "rm", "-f", vol, check=False)
        docker("network", "rm", self.network, check=False)


@pytest.fixture
def sandbox(docker_engine):
    box = Sandbox()
    try:
        yield box
    finally:
        box.cleanup()
