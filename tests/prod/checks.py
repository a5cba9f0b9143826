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
