"""Fixtures for the prod-path tests: a bare Debian 12 server and pebble, both on this machine.

`scripts/prod-test-server` does the work (see docs/prod-testing.md); these fixtures start it
fresh once per session and remove it, its Docker volume and pebble at the end.

A missing Docker engine (or debootstrap, for the first build) skips the tests with the
reason, except under CI=true, where it fails: CI must show the prod path for real.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.prerequisites import unavailable
from tests.support.pebble import Pebble, parse_env

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "prod-test-server"
IN_CI = os.environ.get("CI", "").lower() == "true"
# The harness's cache (rootfs, key, pebble CA), fixed at start: tests point AI_MEETING_CACHE
# elsewhere for the program while they run.
HARNESS_CACHE = os.environ.get("AI_MEETING_CACHE", str(Path.home() / ".cache" / "ai-meeting"))




# Wall times the prod tests measure (bare server -> serving, ...) and what failed `up`s said,
# printed after the run so CI logs keep them.
TIMINGS: dict[str, float] = {}
NOTES: list[str] = []


def pytest_terminal_summary(terminalreporter) -> None:
    if TIMINGS:
        terminalreporter.section("prod path timings")
        for what, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{seconds:7.0f}s  {what}")
    if NOTES:
        terminalreporter.section("prod path: what failed `pulumi up`s said")
        for note in NOTES:
            terminalreporter.write_line(note)


def harness(*args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """Run scripts/prod-test-server; fail with its output if it fails."""
    proc = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "AI_MEETING_CACHE": HARNESS_CACHE},
    )
    if proc.returncode != 0:
        pytest.fail(
            f"scripts/prod-test-server {' '.join(args)} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


@dataclass
class SshResult:
    code: int
    stdout: str
    stderr: str


@dataclass
class ProdServer:
    """The running test server, as a prod stack config and the tests see it."""

    name: str
    host: str  # where the host reaches sshd (127.0.0.1)
    port: int
    user: str
    key_path: Path
    known_hosts: Path
    ip: str  # the server's own address on its Docker network (what pebble validates)
    gateway: str  # this machine as seen from the server
    http_port: int  # 127.0.0.1:http_port -> server:80
    https_port: int  # 127.0.0.1:https_port -> server:443
    domain: str
    env: dict[str, str] = field(repr=False, default_factory=dict)

    @property
    def private_key(self) -> str:
        return self.key_path.read_text()

    def ssh_command(self, key_path: Path | None = None) -> list[str]:
        return [
            "ssh", "-i", str(key_path or self.key_path), "-p", str(self.port),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
            "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "LogLevel=ERROR", f"{self.user}@{self.host}",
        ]

    def ssh(self, command: str, *, check: bool = True, timeout: int = 600,
            input: str | bytes | None = None, key_path: Path | None = None) -> SshResult:
        """Run a shell command line on the server as the deploy user."""
        text = not isinstance(input, bytes)
        proc = subprocess.run(
            [*self.ssh_command(key_path), command], input=input, capture_output=True,
            text=text, timeout=timeout,
        )
        out = proc.stdout if text else proc.stdout.decode(errors="replace")
        err = proc.stderr if text else proc.stderr.decode(errors="replace")
        res = SshResult(proc.returncode, out, err)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"on the server: `{command}` exited {proc.returncode}\n"
                f"--- stdout\n{out[-4000:]}\n--- stderr\n{err[-4000:]}"
            )
        return res

    def sudo(self, command: str, **kw) -> SshResult:
        return self.ssh(f"sudo -n sh -c {shlex.quote(command)}", **kw)

    def put(self, path: str, content: str | bytes, mode: str = "0644") -> None:
        """Write a file on the server as root."""
        self.sudo(f"install -D -m {mode} /dev/stdin {shlex.quote(path)}", input=content)

    def load_images(self, *images: str) -> None:
        harness("load-images", *images, timeout=1200)

    used: bool = field(default=False, repr=False)

    def reset(self) -> None:
        """Replace the server with a fresh bare one (same addresses, ports and key)."""
        harness("start", "--fresh", timeout=1800)


def _check_prerequisites() -> None:
    if shutil.which("docker") is None:
        unavailable("the docker CLI is not installed (run scripts/start-dockerd)")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        unavailable("no Docker engine answers (run scripts/start-dockerd)")
    if os.geteuid() != 0:
        unavailable("the prod test server needs root (debootstrap, privileged container)")
    if shutil.which("debootstrap") is None:
        if not list((Path(HARNESS_CACHE) / "prod-server").glob("debian-*.tar.gz")):
            unavailable("debootstrap is not installed and no cached server rootfs exists")
    if shutil.which("pebble") is None and shutil.which("apt-get") is None:
        unavailable("pebble is not installed (apt-get install pebble)")


@pytest.fixture(scope="session")
def prod_server() -> ProdServer:
    """A fresh bare server (any earlier one is removed first); removed again at the end."""
    _check_prerequisites()
    # The server shares this machine's kernel clock. Should anything on it manage to set the
    # time (the harness denies CAP_SYS_TIME for that reason), say so loudly.
    clock_offset = time.time() - time.monotonic()
    out = harness("start", "--fresh", timeout=1800).stdout
    env = parse_env(out)
    server = ProdServer(
        name=env["PROD_TEST_SERVER_NAME"],
        host=env["PROD_TEST_SSH_HOST"],
        port=int(env["PROD_TEST_SSH_PORT"]),
        user=env["PROD_TEST_SSH_USER"],
        key_path=Path(env["PROD_TEST_SSH_KEY"]),
        known_hosts=Path(env["PROD_TEST_KNOWN_HOSTS"]),
        ip=env["PROD_TEST_SERVER_IP"],
        gateway=env["PROD_TEST_GATEWAY"],
        http_port=int(env["PROD_TEST_HTTP_PORT"]),
        https_port=int(env["PROD_TEST_HTTPS_PORT"]),
        domain=env["PROD_TEST_DOMAIN"],
        env=env,
    )
    try:
        yield server
    finally:
        if os.environ.get("PROD_TEST_KEEP_SERVER", "") != "1":
            subprocess.run([str(SCRIPT), "stop"], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "AI_MEETING_CACHE": HARNESS_CACHE})
        jump = (time.time() - time.monotonic()) - clock_offset
        assert abs(jump) < 30, f"this machine's wall clock jumped {jump:+.0f}s while the test server ran"


@pytest.fixture(scope="session")
def pebble(prod_server: ProdServer) -> Pebble:
    """Pebble and its fake DNS (every name -> the server), started with the server."""
    pb = Pebble.from_harness_env(prod_server.env)
    # Reachable from this machine; the harness test checks it from the server too.
    pb.check_directory()
    return pb


@pytest.fixture(scope="module")
def bare_server(prod_server: ProdServer) -> ProdServer:
    """The session's server, bare: a module that follows one which changed it gets a fresh one."""
    if prod_server.used:
        prod_server.reset()
    prod_server.used = True
    return prod_server
