"""Helpers for the local image tests: polling, a per-test sandbox; `docker` is tests.support's."""

from __future__ import annotations

import json
import time
import uuid

from tests.support import docker

PREFIX = "ai-meeting-local"


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
