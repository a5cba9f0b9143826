"""What a bootstrapped server must look like (R1, R2, R3, R18), checked on the server itself.

Run by test_prod_stack.py after the real `pulumi up` bootstrapped the server; kept apart so
they can be run by hand against any server.
"""

from __future__ import annotations

import re
import subprocess

from tests.prod.conftest import ProdServer

INSTALL = "/opt/ai-meeting"
# Lines the bootstrap scripts print when they change something (as opposed to "already ...",
# "unchanged: ...", "rule exists: ..."). A re-run must print none of them.
CHANGE_LINE = re.compile(
    r"^\[bootstrap:(?P<step>\w+)\] (?P<what>created |wrote: |added |upgraded |installed: |fixed |"
    r"time zone changed|sshd reloaded|systemd manager re-executed|ufw enabled|default (incoming|outgoing)|"
    r"\S+ service (enabled|started|restarted)|fail2ban (enabled|started|restarted)).*$",
    re.M,
)


def changes_in(output: str) -> list[str]:
    return [m.group(0) for m in CHANGE_LINE.finditer(output)]


def base_packages_and_timezone(s: ProdServer, timezone: str = "Asia/Shanghai") -> None:
    for tool in ("curl", "wget", "git", "vim", "htop", "netstat"):
        assert s.ssh(f"command -v {tool}", check=False).code == 0, f"{tool} not installed"
    assert s.ssh("timedatectl show -p Timezone --value").stdout.strip() == timezone
    assert s.ssh("readlink -f /etc/localtime").stdout.strip().endswith(timezone)


def firewall_allows_only(s: ProdServer, ports: set[int], also_allowed: set[int] = frozenset()) -> None:
    status = s.sudo("ufw status verbose").stdout
    assert "Status: active" in status and "Default: deny (incoming)" in status, status
    allowed = {int(p) for p in re.findall(r"^(\d+)/tcp\s+ALLOW IN", status, re.M)}
    assert ports <= allowed, status
    assert allowed <= ports | set(also_allowed), f"unexpected open ports {sorted(allowed - ports)}"


def nofile_configured(s: ProdServer, nofile: int = 65536) -> None:
    limits = s.ssh("cat /etc/security/limits.d/*.conf").stdout
    assert re.search(rf"^\*\s+soft\s+nofile\s+{nofile}\b", limits, re.M), limits
    assert re.search(rf"^\*\s+hard\s+nofile\s+{nofile}\b", limits, re.M), limits
    # The configured default; the effective value is capped by this host (docs/prod-testing.md).
    assert s.ssh("systemctl show -p DefaultLimitNOFILE --value").stdout.strip() == str(nofile)


def docker_engine_and_compose(s: ProdServer, user: str = "deploy") -> None:
    assert s.ssh("systemctl is-enabled docker").stdout.strip() == "enabled"
    assert s.ssh("systemctl is-active docker").stdout.strip() == "active"
    assert "docker" in s.ssh(f"id -nG {user}").stdout.split()
    # A fresh login of deploy reaches the engine without sudo (Docker over ssh:// does that).
    s.ssh("docker info --format '{{.ServerVersion}}'")
    compose = s.ssh("docker compose version 2>/dev/null || docker-compose version", check=False)
    assert compose.code == 0, compose.stderr


def install_layout(s: ProdServer) -> None:
    for sub in ("nginx", "ssl", "data/postgres", "data/redis", "data/minio", "logs/nginx", "logs/app"):
        assert s.sudo(f"test -d {INSTALL}/{sub}", check=False).code == 0, f"{INSTALL}/{sub} missing"
    assert s.sudo(f"stat -c %a {INSTALL}/ssl").stdout.strip() == "700"


def root_login_off_deploy_still_in(s: ProdServer) -> None:
    assert "permitrootlogin no" in s.sudo("sshd -T").stdout
    # A brand-new connection after the hardening reloaded sshd.
    assert s.ssh("id -un").stdout.strip() == s.user
    root = subprocess.run(
        [*s.ssh_command()[:-1], f"root@{s.host}", "true"], capture_output=True, text=True, timeout=30
    )
    assert root.returncode == 255 and "Permission denied" in root.stderr, root.stderr


def fail2ban_and_unattended_upgrades(s: ProdServer) -> None:
    assert s.ssh("systemctl is-active fail2ban").stdout.strip() == "active"
    assert "sshd" in s.sudo("fail2ban-client status").stdout
    assert s.ssh("dpkg-query -W -f '${Status}' unattended-upgrades").stdout.strip() == "install ok installed"
    auto = s.ssh("cat /etc/apt/apt.conf.d/20auto-upgrades").stdout
    assert 'APT::Periodic::Unattended-Upgrade "1";' in auto, auto


def all_bootstrap_results(s: ProdServer, ssh_port_seen_by_client: int) -> None:
    base_packages_and_timezone(s)
    # The program adds target.port to the allowed ports; here that is the host side of the
    # harness's port mapping (2222 -> 22), so it may appear too.
    firewall_allows_only(s, {22, 80, 443}, also_allowed={ssh_port_seen_by_client})
    nofile_configured(s)
    docker_engine_and_compose(s)
    install_layout(s)
    root_login_off_deploy_still_in(s)
    fail2ban_and_unattended_upgrades(s)


# --- the Docker daemon and the host against Lynis (issue #19) ---------------------------------

DAEMON_KEYS = {"live-restore": True, "no-new-privileges": True, "userland-proxy": False, "log-driver": "json-file"}


def docker_daemon_hardened(s: ProdServer, loopback_ports: dict[int, str]) -> None:
    """/etc/docker/daemon.json as the bootstrap writes it for a single server, and in effect:
    live-restore on, every container with no_new_privs, no docker-proxy process, and each
    loopback port (port -> HTTP path) still answering on the server's own 127.0.0.1."""
    import json

    daemon = json.loads(s.sudo("cat /etc/docker/daemon.json").stdout)
    wrong = {k: daemon.get(k) for k, v in DAEMON_KEYS.items() if daemon.get(k) != v}
    assert not wrong, f"daemon.json: {wrong} (whole file: {daemon})"
    assert set(daemon.get("log-opts", {})) >= {"max-size", "max-file"}, daemon
    info = s.ssh("docker info --format '{{.LiveRestoreEnabled}} {{.LoggingDriver}}'").stdout.split()
    assert info == ["true", "json-file"], info
    assert s.sudo("pgrep -c docker-proxy", check=False).stdout.strip() in ("", "0"), "docker-proxy runs: userland-proxy is on"
    # Daemon-wide no-new-privileges is not shown by `docker inspect`: read it from the kernel.
    flags = s.sudo("for p in $(docker ps -q); do pid=$(docker inspect -f '{{.State.Pid}}' $p); "
                   "echo \"$(docker inspect -f '{{.Name}}' $p) $(awk '/^NoNewPrivs/ {print $2}' /proc/$pid/status)\"; done").stdout
    lacking = [line for line in flags.splitlines() if not line.endswith(" 1")]
    assert flags.strip() and not lacking, f"containers without no_new_privs: {lacking}"
    for port, path in loopback_ports.items():
        code = s.ssh(f"curl -s -o /dev/null -w '%{{http_code}}' -m 10 http://127.0.0.1:{port}{path}", check=False).stdout
        assert code == "200", f"127.0.0.1:{port}{path} on the server answered {code!r} (userland-proxy off)"
    guard = s.sudo("systemctl cat docker").stdout
    assert "ai-meeting-dockerd-start" in guard, "no restart guard in docker.service"


# Lynis findings that cannot apply inside the test server (a container on this machine's
# kernel), skipped in a test-only profile; every other finding counts (README: Host hardening).
def lynis_harness_skips() -> dict[str, str]:
    from render.bootstrap import KERNEL_SYSCTLS

    skips = {f"KRNL-6000:{key}": "kernel-wide sysctl: the test server shares this machine's kernel, so the "
             "bootstrap leaves it to the host (it sets it on a VM or bare metal)" for key, _ in KERNEL_SYSCTLS}
    skips["MACF-6290"] = "AppArmor: the test server runs apparmor=unconfined and cannot load profiles of its own"
    return skips


def lynis_audit(s: ProdServer) -> dict[str, object]:
    """Debian's lynis installed on the server (test tooling, not the product) and run as
    `lynis audit system --quick` with the harness profile; the report's index, warnings and
    suggestions."""
    skips = lynis_harness_skips()
    # The bootstrap's package lists are fresh: update only when the install needs it.
    install = "DEBIAN_FRONTEND=noninteractive apt-get -y -q install --no-install-recommends lynis >/dev/null 2>&1"
    s.sudo("dpkg-query -W -f '${Status}' lynis 2>/dev/null | grep -q 'install ok installed' || "
           f"{install} || {{ apt-get -q update >/dev/null && {install}; }}", timeout=600)
    profile = "# ai-meeting test harness: findings that cannot apply inside the test server\n" + \
        "".join(f"# {reason}\nskip-test={test}\n" for test, reason in skips.items())
    s.put("/etc/lynis/custom.prf", profile, mode="0640")
    run = s.sudo("lynis audit system --quick --no-colors >/var/log/lynis-ai-meeting.out 2>&1; echo rc=$?", timeout=900)
    report = s.sudo("cat /var/log/lynis-report.dat").stdout
    values: dict[str, list[str]] = {}
    for line in report.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values.setdefault(key, []).append(value)
    assert "hardening_index" in values, f"no hardening_index in the Lynis report ({run.stdout.strip()})"
    return {
        "index": int(values["hardening_index"][0]),
        "warnings": values.get("warning[]", []),
        "suggestions": values.get("suggestion[]", []),
        "tests": int(values.get("lynis_tests_done", ["0"])[0]),
        "version": values.get("lynis_version", ["?"])[0],
        "skipped": sorted(skips),
    }
