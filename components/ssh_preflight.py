"""A fast SSH preflight for ssh and swarm targets, run by the program before any resource is
declared (preview and up alike).

Without it a wrong key, an unreachable host or a changed host key surfaces from pulumi-command
after its 20 dial attempts (about 65 s, PITFALLS 17), as a Go dial error. Here one `ssh` per
server, with the very key and host-key options Docker's ssh:// transport uses
(target.ssh_options), logs in and runs `sudo -n true` (the bootstrap needs password-less sudo).
Only the causes a rebooting server shows (connection refused or reset, no route, a timeout) are
retried, within a short deadline; a refused key, a changed host key, a name that does not
resolve or a missing sudo right fail at once. The message names the config key, the server,
the cause in ssh's own words, and what to do.

Escape hatch: AI_MEETING_SSH_PREFLIGHT=off (a CI preview that cannot reach the server);
AI_MEETING_SSH_PREFLIGHT_SECONDS sets the retry deadline (default 5: with the engine's own
start, a refused port still fails within 15 s).
"""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from config.model import SshTarget, StackConfig, SwarmTarget

from .target import ssh_material_dir, ssh_options, write_private_file

DEADLINE_S = 5.0
CONNECT_TIMEOUT_S = 5
REMOTE_CHECK = "sudo -n true"
# What a server that is booting or restarting sshd looks like: worth another try.
TRANSIENT = ("refused", "reset", "timeout", "unreachable")


@dataclass(frozen=True)
class Probe:
    key: str  # the config key the operator fixes: ai-meeting:target or ai-meeting:target.nodes[1]
    target: SshTarget
    # False for a swarm's other nodes: one that is down (unreachable, refused, timed out) is a
    # state Swarm handles (its tasks run elsewhere), so it is a warning, probed once; a refused
    # key, a changed host key or no sudo there is still an error.
    required: bool = True
    # A swarm manager: the program reaches the swarm through the first manager that answers
    # (components/swarm.py), so one being down is a warning as long as another answers.
    manager: bool = False

    @property
    def where(self) -> str:
        return f"{self.target.user}@{self.target.host}:{self.target.port}"


@dataclass(frozen=True)
class Verdict:
    cause: str  # ok, auth, host-key, no-sudo, refused, reset, timeout, unreachable, unresolvable, other
    detail: str  # ssh's (or sudo's) own last words
    attempts: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.cause == "ok"


def classify(returncode: int, stderr: str) -> str:
    """ssh exits 255 for its own errors; any other non-zero code is the remote command's."""
    if returncode == 0:
        return "ok"
    s = stderr.lower()
    if returncode != 255:
        return "no-sudo" if "sudo" in s or returncode == 1 else "other"
    if "host identification has changed" in s or "host key verification failed" in s or "host key mismatch" in s:
        return "host-key"
    if "permission denied" in s or "too many authentication failures" in s or "no more authentication methods" in s:
        return "auth"
    if "connection refused" in s:
        return "refused"
    if "timed out" in s:
        return "timeout"
    if "could not resolve hostname" in s or "name or service not known" in s or "temporary failure in name resolution" in s:
        return "unresolvable"
    if "no route to host" in s or "network is unreachable" in s or "host is unreachable" in s:
        return "unreachable"
    if "connection reset" in s or "connection closed" in s or "kex_exchange_identification" in s:
        return "reset"
    return "other"


def ssh_argv(probe: Probe, options: list[str], connect_timeout: int) -> list[str]:
    # ssh keeps the first value given for an option: ours go before ssh_options' ConnectTimeout.
    t = probe.target
    return [
        "ssh", "-o", f"ConnectTimeout={connect_timeout}", "-o", "ConnectionAttempts=1", "-o", "LogLevel=ERROR",
        *options, "-p", str(t.port), f"{t.user}@{t.host}", REMOTE_CHECK,
    ]


def _last_words(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not set(ln.strip()) <= {"@"}]
    return " / ".join(lines[-2:])[:300] if lines else "no message"


def probe_once(probe: Probe, options: list[str], connect_timeout: int) -> tuple[str, str]:
    try:
        r = subprocess.run(ssh_argv(probe, options, connect_timeout), stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=connect_timeout + 10)
    except subprocess.TimeoutExpired:
        return "timeout", f"no answer within {connect_timeout + 10} s"
    return classify(r.returncode, r.stderr), _last_words(r.stderr)


def probe_options(probe: Probe, stack: str) -> list[str]:
    """ssh_options (the key and host-key policy Docker's ssh uses). A pinned host key is checked
    against a file of the probe's own: ssh_options writes one shared known_hosts per stack, so
    several pinned servers probed at once would overwrite each other's line (ssh keeps the
    first UserKnownHostsFile given)."""
    options = ssh_options(probe.target, stack)
    t = probe.target
    if t.host_key:
        own = ssh_material_dir(stack) / f"known_hosts.preflight-{t.host}-{t.port}"
        write_private_file(own, f"{t.host if t.port == 22 else f'[{t.host}]:{t.port}'} {t.host_key}")
        options = ["-o", f"UserKnownHostsFile={own}", *options]
    return options


def run_probe(probe: Probe, stack: str, deadline_s: float = DEADLINE_S, options: list[str] | None = None) -> Verdict:
    """`options`: probe_options, written beforehand (they write the key and known_hosts files,
    which parallel probes must not rewrite under each other's ssh)."""
    if options is None:
        options = probe_options(probe, stack)
    started = time.monotonic()
    attempts = 0
    while True:
        remaining = deadline_s - (time.monotonic() - started)
        attempts += 1
        # deadline 0: a single attempt with the full connect timeout
        connect = CONNECT_TIMEOUT_S if deadline_s <= 0 else max(1, min(CONNECT_TIMEOUT_S, int(remaining)))
        cause, detail = probe_once(probe, options, connect)
        elapsed = time.monotonic() - started
        if cause not in TRANSIENT or elapsed + 1 >= deadline_s:
            return Verdict(cause, detail if cause != "ok" else "", attempts, elapsed)
        time.sleep(1)


def explain(probe: Probe, v: Verdict, stack: str) -> str:
    t, key = probe.target, probe.key
    head = (f"{key} ({probe.where}): SSH preflight failed after {v.seconds:.1f} s "
            f"({v.attempts} attempt{'s' if v.attempts != 1 else ''}); nothing was changed. ")
    said = f"ssh said: {v.detail.rstrip('.')}."
    known_hosts = ssh_material_dir(stack) / "known_hosts"
    what = {
        "auth": (f"The server refused the key: authentication failed ({said}) Set ai-meeting:target.private_key to the "
                 f"deploy key whose public half is in ~{t.user}/.ssh/authorized_keys on the server "
                 "(`pulumi config set --secret --path 'ai-meeting:target.private_key' -- \"$(cat KEY)\"`), check "
                 f"{key}.user, and that fail2ban on the server has not banned this machine."),
        "host-key": ("The server's host key does not match the one this stack trusts: host key verification failed "
                     f"({said}) If the server was reinstalled on purpose, pin its new key "
                     f"(`ssh-keyscan -p {t.port} {t.host}`, then `pulumi config set --path '{key}.host_key' '<type> <key>'`"
                     + ("" if t.host_key else f", and drop the remembered one: `ssh-keygen -R '[{t.host}]:{t.port}' -f {known_hosts}`")
                     + "); otherwise something may be intercepting the connection: stop here and find out."),
        "no-sudo": (f"{t.user} logs in but may not run sudo without a password ({said}) The bootstrap needs it: "
                    f"give {t.user} password-less sudo (README: Production), or set {key}.user to a user that has it."),
        "refused": (f"Nothing accepts SSH connections there: connection refused ({said}) Check {key}.host and "
                    f"{key}.port, that sshd runs and that the server's firewall lets port {t.port} through; a server "
                    "that is still rebooting: run the command again once it is up."),
        "reset": (f"The server closed the connection before SSH started ({said}) sshd may be starting, overloaded "
                  "(MaxStartups) or this address banned by fail2ban: try again in a minute, else check sshd's log."),
        "timeout": (f"No answer from {t.host}:{t.port}: unable to connect, the connection timed out ({said}) Check "
                    f"{key}.host, that the server is up, and that no firewall drops port {t.port}."),
        "unreachable": (f"The network cannot reach {t.host}: unable to connect ({said}) Check {key}.host and this "
                        "machine's route to the server (VPN, bastion)."),
        "unresolvable": f"{t.host} does not resolve ({said}) Check {key}.host (a typo?) and this machine's DNS.",
    }.get(v.cause, f"ssh failed ({said}) Try `ssh -p {t.port} {t.user}@{t.host}` by hand with the deploy key.")
    return head + what


def probes(cfg: StackConfig) -> list[Probe]:
    target = cfg.target
    if isinstance(target, SshTarget):
        return [Probe("ai-meeting:target", target)]
    if isinstance(target, SwarmTarget):
        # Any node may be down (Swarm runs its tasks elsewhere) as long as one manager answers:
        # the program reaches the swarm through it.
        return [Probe(f"ai-meeting:target.nodes[{i}]", n.ssh_target(target.private_key), required=False,
                      manager=n.role == "manager")
                for i, n in enumerate(target.nodes)]
    return []


NODE_DOWN = (*TRANSIENT, "unresolvable")


def ssh_preflight_problems(cfg: StackConfig, stack: str, deadline_s: float | None = None,
                           warn: Callable[[str], object] | None = None) -> list[str]:
    """One message per server that cannot be used; [] when every one answers (or for a local
    target, or with AI_MEETING_SSH_PREFLIGHT=off). The servers are probed in parallel. A swarm
    node other than the manager that is down goes to `warn` instead (pulumi.log.warn)."""
    todo = probes(cfg)
    if not todo or os.environ.get("AI_MEETING_SSH_PREFLIGHT", "on").lower() in ("off", "0", "false", "no"):
        return []
    if deadline_s is None:
        deadline_s = float(os.environ.get("AI_MEETING_SSH_PREFLIGHT_SECONDS", DEADLINE_S))
    options = [probe_options(p, stack) for p in todo]  # files written once, before any ssh runs
    with ThreadPoolExecutor(max_workers=min(8, len(todo))) as pool:
        # An optional node gets one attempt (deadline 0): its being down must not slow every preview.
        verdicts = list(pool.map(lambda po: run_probe(po[0], stack, deadline_s if po[0].required else 0, po[1]),
                                 zip(todo, options)))
    problems = []
    for p, v in zip(todo, verdicts):
        if v.ok:
            continue
        if not p.required and v.cause in NODE_DOWN:
            if warn is not None:
                warn(explain(p, v, stack).replace("nothing was changed. ", "")
                     + " Continuing: Swarm runs its tasks on the other nodes; steps on this node fail until it is back.")
            continue
        problems.append(explain(p, v, stack))
    managers = [(p, v) for p, v in zip(todo, verdicts) if p.manager]
    if managers and not any(v.ok for _, v in managers):
        p, v = managers[0]
        message = explain(p, v, stack)
        if message not in problems:
            problems.append(message + " No swarm manager answers: the program reaches the swarm through one.")
    return problems
