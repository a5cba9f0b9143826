"""Prod server bootstrap (R1, R2, R3, R18): one idempotent bash script per step.

Each step is run over SSH with sudo by pulumi_command.remote.Command; the component puts a
sha256 of the script in `triggers`, so a changed step re-runs alone.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ._templating import check_path, check_port, check_positive, render

BASE_PACKAGES = ("curl", "wget", "git", "vim", "htop", "net-tools", "ca-certificates", "cron")
STEP_ORDER = ("packages", "timezone", "firewall", "limits", "docker", "layout", "hardening", "preflight", "certbot")
DEFAULT_BANNER = (
    "Authorised access only. This system is private property; activity on it is monitored and\n"
    "recorded, and unauthorised access or use is prohibited and may be reported to law enforcement."
)
# sshd, in this order (plan §11.1, then Lynis SSH-7408). Not Port (moving sshd off 22 is the
# operator's call) nor AllowUsers/AllowGroups (SSH-7440: who may log in is the operator's).
SSHD_SETTINGS = (
    ("PermitRootLogin", "no"),
    ("PasswordAuthentication", "no"),
    ("KbdInteractiveAuthentication", "no"),
    ("MaxAuthTries", "3"),
    ("MaxSessions", "2"),
    ("ClientAliveInterval", "300"),
    ("ClientAliveCountMax", "2"),
    ("TCPKeepAlive", "no"),
    ("Compression", "no"),
    ("LogLevel", "VERBOSE"),
    ("X11Forwarding", "no"),
    ("AllowAgentForwarding", "no"),
    ("AllowTcpForwarding", "no"),
)
LOGIN_DEFS = (
    ("UMASK", "027"),
    ("PASS_MAX_DAYS", "365"),
    ("PASS_MIN_DAYS", "1"),
    ("PASS_WARN_AGE", "14"),
    ("SHA_CRYPT_MIN_ROUNDS", "5000"),
    ("SHA_CRYPT_MAX_ROUNDS", "50000"),
)
# Per network namespace (apply wherever the bootstrap runs). Not net.ipv4.conf.all.forwarding=0:
# Docker needs forwarding.
NETWORK_SYSCTLS = (
    ("net.ipv4.conf.all.accept_redirects", "0"),
    ("net.ipv4.conf.default.accept_redirects", "0"),
    ("net.ipv4.conf.all.accept_source_route", "0"),
    ("net.ipv4.conf.default.accept_source_route", "0"),
    ("net.ipv4.conf.all.send_redirects", "0"),
    ("net.ipv4.conf.default.send_redirects", "0"),
    ("net.ipv4.conf.all.log_martians", "1"),
    ("net.ipv4.conf.default.log_martians", "1"),
    ("net.ipv4.conf.all.rp_filter", "1"),
    ("net.ipv4.icmp_echo_ignore_broadcasts", "1"),
    ("net.ipv4.icmp_ignore_bogus_error_responses", "1"),
    ("net.ipv4.tcp_syncookies", "1"),
    ("net.ipv6.conf.all.accept_redirects", "0"),
    ("net.ipv6.conf.default.accept_redirects", "0"),
    ("net.ipv6.conf.all.accept_source_route", "0"),
    ("net.ipv6.conf.default.accept_source_route", "0"),
)
# Kernel-wide: set on a VM or bare metal, never from inside a container (they are the host's).
# Not kernel.modules_disabled=1 (one-way until reboot: Docker loads modules for its networks)
# nor kernel.unprivileged_bpf_disabled=1 (one-way; Debian's 2 already denies unprivileged BPF).
KERNEL_SYSCTLS = (
    ("dev.tty.ldisc_autoload", "0"),
    ("fs.protected_fifos", "2"),
    ("fs.protected_hardlinks", "1"),
    ("fs.protected_regular", "2"),
    ("fs.protected_symlinks", "1"),
    ("fs.suid_dumpable", "0"),
    ("kernel.core_uses_pid", "1"),
    ("kernel.ctrl-alt-del", "0"),
    ("kernel.dmesg_restrict", "1"),
    ("kernel.kptr_restrict", "2"),
    ("kernel.perf_event_paranoid", "3"),
    ("kernel.randomize_va_space", "2"),
    ("kernel.sysrq", "0"),
)
DISABLED_MODULES = ("usb-storage", "firewire-core", "firewire-ohci", "dccp", "sctp", "rds", "tipc")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_TZ_RE = re.compile(r"^[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*$")
_VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+){0,2}$")


@dataclass(frozen=True)
class BootstrapSettings:
    deploy_user: str
    timezone: str = "Asia/Shanghai"
    ssh_port: int = 22
    allowed_tcp_ports: tuple[int, ...] = (22, 80, 443)
    nofile: int = 65536
    install_dir: str = "/opt/ai-meeting"
    min_cpus: int = 4
    min_memory_gb: int = 8
    min_disk_gb: int = 100
    preflight_mode: str = "warn"  # or "fail"
    min_docker_version: str = "24.0"
    min_compose_version: str = "2.20"
    letsencrypt: bool = False
    offsite_backups: bool = False  # age, to encrypt the off-site copies (README: Off-site backups)
    app_log_uid: int = 10001  # the API image's uid: it writes <install_dir>/logs/app
    # Weekly prune of *dangling* images; True also removes unused tagged images older than
    # prune_until (not for offline servers whose images are loaded by hand: see hardening).
    prune_unused_images: bool = False
    prune_until: str = "720h"
    prune_schedule: str = "30 3 * * 0"
    # /etc/docker/daemon.json (step docker). live_restore must be False on Swarm nodes: swarm
    # mode refuses to start with it ("--live-restore daemon configuration is incompatible").
    docker_live_restore: bool = True
    docker_no_new_privileges: bool = True
    docker_userland_proxy: bool = False
    docker_log_max_size: str = "20m"
    docker_log_max_file: int = 5
    # nginx's published ports: held (SYNs dropped, not refused) while dockerd starts.
    published_ports: tuple[int, ...] = (80, 443)
    # Host policy (step hardening, Lynis): idle interactive shells logged out after this many
    # seconds; the legal banner of /etc/issue and /etc/issue.net.
    shell_timeout: int = 900
    login_banner: str = DEFAULT_BANNER

    def __post_init__(self) -> None:
        if not isinstance(self.deploy_user, str) or not _USER_RE.match(self.deploy_user):
            raise ValueError(f"deploy_user: {self.deploy_user!r} is not a valid user name")
        if self.deploy_user == "root":
            raise ValueError("deploy_user: must not be root (the hardening step disables root SSH login)")
        if not _TZ_RE.match(self.timezone) or ".." in self.timezone:
            raise ValueError(f"timezone: {self.timezone!r} must be an IANA zone such as Asia/Shanghai")
        check_port(self.ssh_port, "ssh_port")
        if isinstance(self.allowed_tcp_ports, (str, int)) or not self.allowed_tcp_ports:
            raise ValueError("allowed_tcp_ports: a non-empty tuple of ports is required")
        for i, p in enumerate(self.allowed_tcp_ports):
            check_port(p, f"allowed_tcp_ports[{i}]")
        check_positive(self.nofile, "nofile", 1024)
        check_positive(self.app_log_uid, "app_log_uid", 0)
        check_path(self.install_dir, "install_dir")
        if self.install_dir.rstrip("/") in ("", "/", "/etc", "/usr", "/var", "/home", "/root", "/opt"):
            raise ValueError(f"install_dir: {self.install_dir!r} is a system directory")
        check_positive(self.min_cpus, "min_cpus", 1)
        check_positive(self.min_memory_gb, "min_memory_gb", 1)
        check_positive(self.min_disk_gb, "min_disk_gb", 1)
        if self.preflight_mode not in ("warn", "fail"):
            raise ValueError(f"preflight_mode: {self.preflight_mode!r} must be 'warn' or 'fail'")
        for field in ("min_docker_version", "min_compose_version"):
            if not _VERSION_RE.match(getattr(self, field)):
                raise ValueError(f"{field}: {getattr(self, field)!r} must look like 24.0 or 2.20.1")
        if not re.fullmatch(r"[0-9]+h", self.prune_until):
            raise ValueError(f"prune_until: {self.prune_until!r} must be hours such as 720h")
        from ._templating import check_cron_schedule

        check_cron_schedule(self.prune_schedule, "prune_schedule")
        if not re.fullmatch(r"[1-9][0-9]*[kmg]", str(self.docker_log_max_size)):
            raise ValueError(f"docker_log_max_size: {self.docker_log_max_size!r} must look like 20m (k, m or g)")
        check_positive(self.docker_log_max_file, "docker_log_max_file", 1)
        if isinstance(self.published_ports, (str, int)) or not self.published_ports:
            raise ValueError("published_ports: a non-empty tuple of ports is required")
        for i, p in enumerate(self.published_ports):
            check_port(p, f"published_ports[{i}]")
        check_positive(self.shell_timeout, "shell_timeout", 60)
        # Written through a quoted here-document: printable lines, never its delimiter.
        lines = self.login_banner.splitlines() if isinstance(self.login_banner, str) else []
        if not any(line.strip() for line in lines) or not all(line.isprintable() for line in lines) \
                or "BANNER" in lines:
            raise ValueError("login_banner: one or more lines of printable text are required")

    @property
    def firewall_ports(self) -> tuple[int, ...]:
        """Allowed ports, SSH always first (so it is open before the firewall is enabled)."""
        ports = [self.ssh_port] + [p for p in self.allowed_tcp_ports if p != self.ssh_port]
        return tuple(dict.fromkeys(ports))


@dataclass(frozen=True)
class BootstrapStep:
    name: str
    script: str


def layout_dirs(s: BootstrapSettings) -> list[tuple[str, str, str]]:
    """(path, mode, enforce) for the plan §4.1 layout; enforce=no leaves existing dirs alone."""
    d = s.install_dir.rstrip("/")
    dirs = [
        (d, "0755", "yes"),
        (f"{d}/nginx", "0755", "yes"),
        (f"{d}/ssl", "0700", "yes"),  # private keys
        (f"{d}/bin", "0755", "yes"),
        (f"{d}/backups", "0700", "yes"),  # dumps hold every user's data
        (f"{d}/logs", "0755", "yes"),
        (f"{d}/logs/nginx", "0755", "no"),
        (f"{d}/logs/app", "0755", "no"),
        (f"{d}/metrics", "0755", "yes"),  # the node exporter's textfile directory (backup metrics)
        (f"{d}/data", "0755", "yes"),
        # Owned by the containers after their first start (postgres/redis chown to their uid).
        (f"{d}/data/postgres", "0700", "no"),
        (f"{d}/data/redis", "0700", "no"),
        (f"{d}/data/minio", "0700", "no"),
    ]
    if s.letsencrypt:
        dirs.append((f"{d}/acme", "0755", "yes"))  # certbot webroot, served by nginx on :80
    return dirs


def daemon_json(s: BootstrapSettings) -> dict[str, object]:
    """The keys the bootstrap owns in /etc/docker/daemon.json (merged into the server's file)."""
    return {
        "live-restore": s.docker_live_restore,
        "log-driver": "json-file",
        "log-opts": {"max-file": str(s.docker_log_max_file), "max-size": s.docker_log_max_size},
        "no-new-privileges": s.docker_no_new_privileges,
        "userland-proxy": s.docker_userland_proxy,
    }


def _prune_cron(s: BootstrapSettings) -> str:
    if s.prune_unused_images:
        cmd = f'docker image prune --all --force --filter "until={s.prune_until}"'
    else:
        cmd = "docker image prune --force"
    return f"{s.prune_schedule} root {cmd} >/dev/null 2>&1"


def render_bootstrap_steps(s: BootstrapSettings) -> list[BootstrapStep]:
    steps = [
        ("packages", {"packages": BASE_PACKAGES + (("age",) if s.offsite_backups else ())}),
        ("timezone", {}),
        ("firewall", {"ports": s.firewall_ports}),
        ("limits", {}),
        ("docker", {"daemon_json": json.dumps(daemon_json(s), sort_keys=True), "live_restore": s.docker_live_restore,
                    "published_ports": sorted(set(s.published_ports))}),
        ("layout", {"dirs": layout_dirs(s)}),
        ("hardening", {
            "prune_cron": _prune_cron(s), "sshd_settings": SSHD_SETTINGS, "login_defs": LOGIN_DEFS,
            "network_sysctls": NETWORK_SYSCTLS, "kernel_sysctls": KERNEL_SYSCTLS,
            "disabled_modules": DISABLED_MODULES,
        }),
        ("preflight", {}),
    ]
    if s.letsencrypt:
        steps.append(("certbot", {}))
    return [BootstrapStep(name, render(f"bootstrap/{name}.sh.j2", s=s, **extra)) for name, extra in steps]
