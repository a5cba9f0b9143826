"""End-to-end smoke test of the locally built Pulumi toolchain.

Runs tests/toolchain/program (random, tls, command.local, command.remote against an OpenSSH
server started here on 127.0.0.1, a Docker network + container on the local engine) through
stack init, preview, up, a second preview that must show no changes, and destroy, with a
temporary file:// backend and a fixed test passphrase.

Under CI=true a missing pulumi CLI, language host, plugin or Docker engine FAILS the test;
elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.support import REPO, TOOLCHAIN_BIN, unavailable
from tests.support import toolchain_env as base_toolchain_env

# e2e: the full engine (CLI, language host, the four plugins built by scripts/install-pulumi).
pytestmark = [pytest.mark.toolchain, pytest.mark.e2e]

PROGRAM = Path(__file__).resolve().parent / "program"
BASE_IMAGE = "ai-meeting-local/base:bookworm"
BUSYBOX_IMAGE = "ai-meeting-toolchain-smoke/busybox:1"


def run(cmd: list[str], *, env=None, cwd=None, check=True, timeout=600, stdin=None):
    proc = subprocess.run(
        cmd, env=env, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


def docker_ok() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toolchain_env():
    env = base_toolchain_env()
    pulumi = shutil.which("pulumi", path=env["PATH"])
    if not pulumi:
        unavailable(f"no pulumi CLI on PATH or in {TOOLCHAIN_BIN}: run scripts/install-pulumi")
    check = run([str(REPO / "scripts" / "install-pulumi"), "--check"], env=env, check=False)
    if check.returncode != 0:
        missing = [line for line in check.stdout.splitlines() if "missing:" in line]
        unavailable("Pulumi toolchain incomplete (scripts/install-pulumi --check): " + "; ".join(missing))
    env["PULUMI_CONFIG_PASSPHRASE"] = "toolchain-smoke-test-passphrase"
    env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
    return env


@pytest.fixture(scope="module")
def docker_engine():
    if shutil.which("docker") is None:
        unavailable("no docker CLI")
    if not docker_ok():
        start = REPO / "scripts" / "start-dockerd"
        if start.exists():
            subprocess.run([str(start)], capture_output=True, timeout=120)
        else:
            with open("/var/log/dockerd.log", "ab") as log:
                subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
            for _ in range(60):
                if docker_ok():
                    break
                time.sleep(1)
    if not docker_ok():
        unavailable("no Docker engine answers `docker info`")


@pytest.fixture(scope="module")
def image(docker_engine):
    """A local image: the project's base image, else a busybox image made with docker import."""
    for name in (BASE_IMAGE, BUSYBOX_IMAGE):
        if subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0:
            return name
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        subprocess.run(
            ["flock", "/tmp/apt.lock", "apt-get", "install", "-y", "busybox-static"],
            capture_output=True,
            timeout=300,
        )
    if not busybox.exists():
        unavailable(f"no local image ({BASE_IMAGE}) and no busybox-static to make one")
    with tempfile.TemporaryDirectory() as tmp:
        tar_path = Path(tmp) / "rootfs.tar"
        with tarfile.open(tar_path, "w") as tar:
            tar.add(busybox, arcname="bin/busybox")
            for applet in ("sh", "sleep", "echo", "true"):
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type = tarfile.SYMTYPE
                info.linkname = "busybox"
                tar.addfile(info)
        run(["docker", "import", str(tar_path), BUSYBOX_IMAGE])
    return BUSYBOX_IMAGE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """An OpenSSH server on 127.0.0.1 with its own config, host key and one authorized key."""
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd_bin).exists():
        unavailable("no OpenSSH server (/usr/sbin/sshd)")
    if os.geteuid() != 0:
        unavailable("the test's sshd runs as root (key auth only, loopback only): run the tests as root (CI does)")
    d = tmp_path_factory.mktemp("sshd")
    os.chmod(d, 0o700)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")])
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "user_key")])
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = free_port()
    (d / "sshd_config").write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host_key'}
PidFile {d / 'sshd.pid'}
AuthorizedKeysFile {d / 'authorized_keys'}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
"""
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    proc = subprocess.Popen(
        [sshd_bin, "-D", "-e", "-f", str(d / "sshd_config")],
        stdout=subprocess.DEVNULL,
        stderr=open(d / "sshd.log", "w"),
    )
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise AssertionError("sshd did not listen: " + (d / "sshd.log").read_text())
    yield {"host": "127.0.0.1", "port": port, "user": "root", "key": d / "user_key"}
    proc.terminate()
    proc.wait(timeout=10)


# --------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------


def docker_exists(kind: str, name: str) -> bool:
    return subprocess.run(["docker", kind, "inspect", name], capture_output=True).returncode == 0


def test_preview_up_noop_destroy(toolchain_env, image, sshd, tmp_path):
    env = dict(toolchain_env)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    env["PULUMI_BACKEND_URL"] = f"file://{state}"
    work = tmp_path / "program"
    shutil.copytree(PROGRAM, work)
    # The copy lives elsewhere: point virtualenv at the repo's venv by absolute path.
    yaml = (work / "Pulumi.yaml").read_text().replace(
        "../../../.venv", str(REPO / ".venv") if (REPO / ".venv").exists() else sys.prefix
    )
    (work / "Pulumi.yaml").write_text(yaml)

    suffix = uuid.uuid4().hex[:8]
    stack = "smoke"
    pulumi = ["pulumi", "--non-interactive", "--color", "never"]

    def pl(*args, **kw):
        return run([*pulumi, *args, "--stack", stack], env=env, cwd=work, **kw)

    run([*pulumi, "stack", "init", stack], env=env, cwd=work)
    for key, value in {
        "suffix": suffix,
        "image": image,
        "sshHost": sshd["host"],
        "sshPort": str(sshd["port"]),
        "sshUser": sshd["user"],
        "sshKeyFile": str(sshd["key"]),
    }.items():
        pl("config", "set", key, value)

    container = f"toolchain-smoke-{suffix}"
    network = f"toolchain-smoke-{suffix}"
    try:
        preview = pl("preview", "--diff")
        assert "+ " in preview.stdout, preview.stdout

        pl("up", "--yes", "--skip-preview")
        outputs = json.loads(pl("stack", "output", "--json", "--show-secrets").stdout)
        assert outputs["localStdout"] == "local-ok"
        assert outputs["remoteStdout"] == "remote-ok"
        assert outputs["passwordLength"] == 24
        assert outputs["certPemHead"] == "-----BEGIN CERTIFICATE-----"
        assert outputs["containerName"] == container
        assert docker_exists("container", container), "container missing after up"
        assert docker_exists("network", network), "network missing after up"
        state_json = run(
            ["docker", "inspect", "-f", "{{.State.Running}}", container], env=env
        ).stdout.strip()
        assert state_json == "true"

        pl("preview", "--expect-no-changes")

        pl("destroy", "--yes", "--skip-preview")
        assert not docker_exists("container", container), "container left after destroy"
        assert not docker_exists("network", network), "network left after destroy"
    finally:
        # Leave nothing behind even when an assertion failed half way.
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
        subprocess.run(["docker", "network", "rm", network], capture_output=True)
        pl("stack", "rm", "--yes", "--force", check=False)
