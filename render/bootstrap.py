"""Prod server bootstrap (R1, R2, R3, R18): one idempotent bash script per step.

Each step is run over SSH with sudo by pulumi_command.remote.Command; the component puts a
sha256 of the script in `triggers`, so a changed step re-runs alone.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ._templating import check_path, check_port, check_positive, render

BASE_PACKAGES = ("curl", "wget", "git", "vim", "htop", "net-tools", "ca-certificates", "cron")
STEP_ORDER = ("packages", "timezone", "firewall", "limits", "docker", "layout", "hardening", "preflight", "certbot")
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
    app_log_uid: int = 10001  # the API image's uid: it writes <install_dir>/logs/app
    # Weekly prune of *dangling* images; True also removes unused tagged images older than
    # prune_until (not for offline servers whose images are loaded by hand: see hardening).
    prune_unused_images: bool = False
    prune_until: str = "720h"
    prune_schedule: str = "30 3 * * 0"

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


def _prune_cron(s: BootstrapSettings) -> str:
    if s.prune_unused_images:
        cmd = f'docker image prune --all --force --filter "until={s.prune_until}"'
    else:
        cmd = "docker image prune --force"
    return f"{s.prune_schedule} root {cmd} >/dev/null 2>&1"


def render_bootstrap_steps(s: BootstrapSettings) -> list[BootstrapStep]:
    steps = [
        ("packages", {"packages": BASE_PACKAGES}),
        ("timezone", {}),
        ("firewall", {"ports": s.firewall_ports}),
        ("limits", {}),
        ("docker", {}),
        ("layout", {"dirs": layout_dirs(s)}),
        ("hardening", {"prune_cron": _prune_cron(s)}),
        ("preflight", {}),
    ]
    if s.letsencrypt:
        steps.append(("certbot", {}))
    return [BootstrapStep(name, render(f"bootstrap/{name}.sh.j2", s=s, **extra)) for name, extra in steps]
