"""The one `docker` CLI helper."""

from __future__ import annotations

import subprocess


class DockerError(subprocess.CalledProcessError, AssertionError):
    """A failed `docker` command: a CalledProcessError (as subprocess.run(check=True) raises) and
    an AssertionError (a test failure), whose message carries the command's output."""

    def __str__(self) -> str:
        return (f"docker {' '.join(self.cmd[1:])} -> {self.returncode}\n"
                f"stdout: {self.stdout}\nstderr: {self.stderr}")


def docker(*args: str, check: bool = True, timeout: float | None = 120, input: str | None = None,
           **kw) -> subprocess.CompletedProcess[str]:
    """Run `docker ARGS` (text, output captured); with check, a non-zero exit raises DockerError."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, input=input, **kw)
    if check and proc.returncode != 0:
        raise DockerError(proc.returncode, proc.args, proc.stdout, proc.stderr)
    return proc


NEVER_HEALTHY = "ai-meeting-local/api:never-healthy"


def build_never_healthy_image(base: str = "ai-meeting-local/api:demo-1") -> str:
    """A release that starts but never answers its healthcheck (for rollout failure tests)."""
    docker("build", "-q", "-t", NEVER_HEALTHY, "-", input=f'FROM {base}\nCMD ["sleep", "infinity"]\n',
           env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/local/bin:/usr/bin:/bin"}, timeout=300)
    return NEVER_HEALTHY
