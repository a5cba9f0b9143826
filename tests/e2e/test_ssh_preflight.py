"""Fast SSH failures (issue #17 item 7; components/ssh_preflight.py) against a real OpenSSH
server on 127.0.0.1: a wrong key, a changed host key, nothing listening and a silent port each
fail with a message naming the key, the server, the cause and what to do; a server that starts
listening a few seconds late (a reboot) is waited for. Then through the real engine: `pulumi
preview` and `pulumi up` of the program with such a target fail in <= 15 s (65 s before, from
pulumi-command's dial retries), with nothing declared."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from config.model import SshTarget, StackConfig, SwarmNode, SwarmTarget
from components.ssh_preflight import Probe, classify, run_probe, ssh_preflight_problems
from tests.prerequisites import unavailable

FAST_FAILURE_S = 15  # issue #17: a wrong key, an unreachable host, a changed host key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


class Sshd:
    """An OpenSSH server on 127.0.0.1 with its own config, host key and one authorized key
    (root, key only: the tests' own user; nothing else on this machine changes)."""

    def __init__(self, d: Path, port: int | None = None):
        self.dir, self.port = d, port or free_port()
        self.host_key = keygen(d / "host_key")
        self.user_key = keygen(d / "user_key")
        (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
        os.chmod(d / "authorized_keys", 0o600)
        (d / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\nPidFile {d / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Sshd":
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.proc = subprocess.Popen([shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(self.dir / "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "sshd.log", "w"))
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("sshd did not listen: " + (self.dir / "sshd.log").read_text())

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def public_host_key(self) -> str:
        return " ".join(self.host_key.with_suffix(".pub").read_text().split()[:2])

    def target(self, key: Path | None = None, **kw) -> SshTarget:
        return SshTarget(host="127.0.0.1", port=self.port, user="root",
                         private_key=SecretStr((key or self.user_key).read_text()), **kw)


@pytest.fixture
def sshd_dir(tmp_path):
    if not (shutil.which("sshd") or Path("/usr/sbin/sshd").exists()) or not shutil.which("ssh"):
        unavailable("no OpenSSH client/server (apt-get install openssh-client openssh-server)")
    if os.geteuid() != 0:
        unavailable("the test's sshd runs as root (key auth only, loopback only): run the tests as root (CI does)")
    d = tmp_path / "sshd"
    d.mkdir(mode=0o700)
    return d


@pytest.fixture
def sshd(sshd_dir):
    s = Sshd(sshd_dir).start()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """ssh_options writes the key and known_hosts under AI_MEETING_CACHE: keep them in tmp."""
    monkeypatch.setenv("AI_MEETING_CACHE", str(tmp_path / "cache"))


def check(target: SshTarget, deadline: float = 10.0):
    probe = Probe("ai-meeting:target", target)
    started = time.monotonic()
    verdict = run_probe(probe, "d2-preflight", deadline)
    return verdict, time.monotonic() - started


# ---- the probe against a real sshd ----------------------------------------------------------------

def test_the_right_key_passes_at_the_first_attempt(sshd):
    v, seconds = check(sshd.target(host_key=sshd.public_host_key()))
    assert v.ok and v.attempts == 1, v
    assert seconds < 5


def test_a_wrong_key_fails_at_once(sshd, tmp_path):
    v, seconds = check(sshd.target(key=keygen(tmp_path / "stranger")))
    assert v.cause == "auth" and v.attempts == 1 and "Permission denied" in v.detail, v
    assert seconds < 5


def test_a_changed_host_key_fails_at_once_pinned_or_remembered(sshd, tmp_path, monkeypatch):
    other = " ".join(keygen(tmp_path / "other_host").with_suffix(".pub").read_text().split()[:2])
    v, _ = check(sshd.target(host_key=other))
    assert v.cause == "host-key" and v.attempts == 1 and "verification failed" in v.detail, v
    # accept-new (no host_key; a stack's known_hosts of its own): the first contact is
    # remembered; a different key later is refused
    monkeypatch.setenv("AI_MEETING_CACHE", str(tmp_path / "cache-accept-new"))
    assert check(sshd.target())[0].ok
    sshd.stop()
    keygen_again = sshd.host_key
    keygen_again.unlink()
    keygen_again.with_suffix(".pub").unlink()
    keygen(keygen_again)
    sshd.start()
    v, _ = check(sshd.target())
    assert v.cause == "host-key", v


def test_nothing_listening_is_retried_until_the_deadline_then_fails():
    port = free_port()
    v, seconds = check(SshTarget(host="127.0.0.1", port=port, user="deploy",
                                 private_key=SecretStr("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----")),
                       deadline=4)
    assert v.cause == "refused" and v.attempts >= 3, v
    assert 3 <= seconds <= 6, seconds


def test_a_port_that_never_answers_times_out_within_the_deadline(tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel accepts, nobody ever sends an SSH banner
    try:
        v, seconds = check(SshTarget(host="127.0.0.1", port=silent.getsockname()[1], user="deploy",
                                     private_key=SecretStr(keygen(tmp_path / "k").read_text())), deadline=4)
    finally:
        silent.close()
    assert v.cause == "timeout", v
    assert seconds <= 8, seconds


def test_a_server_that_comes_back_within_the_deadline_is_waited_for(sshd_dir):
    """A reboot: connection refused for ~3 s, then sshd answers; the preflight passes."""
    s = Sshd(sshd_dir)
    starter = threading.Timer(3, s.start)
    starter.start()
    try:
        v, seconds = check(s.target(), deadline=10)
    finally:
        starter.join()
        s.stop()
    assert v.ok and v.attempts >= 2, v
    assert 3 <= seconds < 10


def swarm(*nodes: SwarmNode, key: SecretStr) -> StackConfig:
    return StackConfig.model_construct(target=SwarmTarget.model_construct(kind="swarm", nodes=list(nodes), private_key=key))


def test_a_swarm_node_that_is_down_is_a_warning_the_manager_an_error(sshd, tmp_path):
    """A worker down is a state Swarm handles (a preview while it is gone must still pass):
    one attempt, a warning naming it. The manager (the engine the program deploys through) down
    is an error."""
    key = SecretStr(sshd.user_key.read_text())
    up = SwarmNode(host="127.0.0.1", port=sshd.port, user="root", role="manager",
                   labels={"ai-meeting.data": "true", "ai-meeting.edge": "true"})
    down = SwarmNode(host="127.0.0.1", port=free_port(), user="root")
    warnings: list[str] = []
    started = time.monotonic()
    assert ssh_preflight_problems(swarm(up, down, key=key), "d2-swarm", deadline_s=4, warn=warnings.append) == []
    assert time.monotonic() - started < 3, "a node that is down is probed once, not until the deadline"
    assert len(warnings) == 1 and warnings[0].startswith("ai-meeting:target.nodes[1] (root@127.0.0.1:"), warnings
    assert "connection refused" in warnings[0] and "Continuing" in warnings[0]
    manager_down = SwarmNode(host="127.0.0.1", port=down.port, user="root", role="manager",
                             labels={"ai-meeting.data": "true", "ai-meeting.edge": "true"})
    worker_up = SwarmNode(host="127.0.0.1", port=sshd.port, user="root")
    problems = ssh_preflight_problems(swarm(manager_down, worker_up, key=key), "d2-swarm", deadline_s=2)
    assert len(problems) == 1 and problems[0].startswith("ai-meeting:target.nodes[0] (root@127.0.0.1:"), problems


def test_a_wrong_key_on_any_swarm_node_is_an_error(sshd, tmp_path):
    stranger = SecretStr(keygen(tmp_path / "stranger").read_text())
    nodes = (SwarmNode(host="127.0.0.1", port=sshd.port, user="root", role="manager",
                       labels={"ai-meeting.data": "true", "ai-meeting.edge": "true"}),)
    problems = ssh_preflight_problems(swarm(*nodes, key=stranger), "d2-swarm", deadline_s=2, warn=lambda m: None)
    assert len(problems) == 1 and "authentication failed" in problems[0], problems


def test_several_pinned_nodes_are_probed_at_once_each_against_its_own_key(sshd, tmp_path):
    """Two servers with different pinned host keys, probed in parallel: neither overwrites the
    other's known_hosts line (ssh_options writes one shared file per stack)."""
    d2 = tmp_path / "sshd2"
    d2.mkdir(mode=0o700)
    second = Sshd(d2).start()
    try:
        (d2 / "authorized_keys").write_text(sshd.user_key.with_suffix(".pub").read_text())
        key = SecretStr(sshd.user_key.read_text())
        nodes = [SwarmNode(host="127.0.0.1", port=sshd.port, user="root", role="manager", host_key=sshd.public_host_key(),
                           labels={"ai-meeting.data": "true", "ai-meeting.edge": "true"}),
                 SwarmNode(host="127.0.0.1", port=second.port, user="root", host_key=second.public_host_key())]
        cfg = swarm(*nodes, key=key)
        for _ in range(3):
            assert ssh_preflight_problems(cfg, "d2-pinned", deadline_s=4) == []
    finally:
        second.stop()


def test_the_preflight_can_be_turned_off(monkeypatch):
    cfg = StackConfig.model_construct(target=SshTarget(
        host="127.0.0.1", port=free_port(), user="deploy",
        private_key=SecretStr("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----")))
    monkeypatch.setenv("AI_MEETING_SSH_PREFLIGHT", "off")
    assert ssh_preflight_problems(cfg, "d2") == []


@pytest.mark.parametrize("code, stderr, cause", [
    (255, "root@1.2.3.4: Permission denied (publickey).", "auth"),
    (255, "@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed.", "host-key"),
    (255, "No ED25519 host key is known for [h]:22 and you have requested strict checking.\nHost key verification failed.", "host-key"),
    (255, "ssh: connect to host 1.2.3.4 port 2299: Connection refused", "refused"),
    (255, "ssh: connect to host 10.9.9.9 port 22: Connection timed out", "timeout"),
    (255, "ssh: connect to host 10.9.9.9 port 22: No route to host", "unreachable"),
    (255, "ssh: Could not resolve hostname nope.invalid: Name or service not known", "unresolvable"),
    (255, "kex_exchange_identification: read: Connection reset by peer", "reset"),
    (1, "sudo: a password is required", "no-sudo"),
    (0, "", "ok"),
])
def test_classify(code, stderr, cause):
    assert classify(code, stderr) == cause


# ---- through the engine ---------------------------------------------------------------------------

@pytest.fixture
def ssh_project(tmp_path, sshd):
    from tests.e2e.engine import PulumiProject, require_engine

    env = require_engine()
    p = PulumiProject(tmp_path / "project", "d2-ssh", env)
    p.configure(target={"kind": "ssh", "host": "127.0.0.1", "port": sshd.port, "user": "root"},
                bootstrap={"harden_ssh": False}, name_prefix="aim-d2-ssh",
                images={"pull": False, "nginx": "ai-meeting-local/nginx:1.22"})
    p.env["AI_MEETING_CACHE"] = str(tmp_path / "cache")
    return p


def timed(p, *args: str) -> tuple[str, float, int]:
    started = time.monotonic()
    res = p.run(*args, check=False, timeout=300)
    return res.stdout + res.stderr, time.monotonic() - started, res.code


@pytest.mark.e2e
@pytest.mark.reliability
@pytest.mark.parametrize("case", ["wrong key", "nothing listening", "changed host key"])
def test_preview_and_up_fail_clearly_within_15_s(case, ssh_project, sshd, tmp_path, record):
    p = ssh_project
    p.set_secret("target.private_key", sshd.user_key.read_text())
    cause = {"wrong key": r"Permission denied",
             "nothing listening": r"connection refused",
             "changed host key": r"host key verification failed"}[case]
    if case == "wrong key":
        p.set_secret("target.private_key", keygen(tmp_path / "stranger").read_text())
    elif case == "nothing listening":
        p.configure(target={"kind": "ssh", "host": "127.0.0.1", "port": free_port(), "user": "root"})
        p.set_secret("target.private_key", sshd.user_key.read_text())
    else:
        other = " ".join(keygen(tmp_path / "other_host").with_suffix(".pub").read_text().split()[:2])
        target = dict(p.stack_config()["ai-meeting:target"])
        p.configure(target={**target, "host_key": other})
    import re

    for command in (("preview", "--stack", "d2-ssh"), ("up", "--yes", "--skip-preview", "--stack", "d2-ssh")):
        out, seconds, code = timed(p, *command)
        print(f"{case}: pulumi {command[0]} failed after {seconds:.1f} s")
        record(f"SSH preflight (local sshd): {case} -> `pulumi {command[0]}` fails naming the key and the cause",
               f"{seconds:.1f} s", f"<= {FAST_FAILURE_S} s", seconds <= FAST_FAILURE_S and code != 0)
        assert code != 0, out[-3000:]
        assert re.search(cause, out, re.I), out[-3000:]
        assert "ai-meeting:target (root@127.0.0.1:" in out and "SSH preflight failed" in out, out[-3000:]
        assert "Traceback" not in out, out[-3000:]
        assert "PRIVATE KEY" not in out, "a private key was printed"
        assert seconds <= FAST_FAILURE_S, f"{case}: {seconds:.1f} s > {FAST_FAILURE_S} s\n{out[-2000:]}"
    # nothing was declared: the state has no resources
    exported = p.run("stack", "export", "--stack", "d2-ssh").stdout
    assert '"urn:pulumi:d2-ssh::ai-meeting::ai-meeting:' not in exported
