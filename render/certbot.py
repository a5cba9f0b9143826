"""Let's Encrypt on the prod server (plan §5.1, R13): issue script, deploy hook, renew cron."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from ._templating import check_cron_schedule, check_hostname, check_ident, check_path, check_port, render

_EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_URL_RE = re.compile(r"^https://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~/-]*)?$")
_ARG_RE = re.compile(r"^[A-Za-z0-9_./:=,@+-]+$")


@dataclass(frozen=True)
class CertbotSettings:
    domains: tuple[str, ...]
    email: str
    install_dir: str = "/opt/ai-meeting"
    webroot: str = "/opt/ai-meeting/acme"
    acme_server: str | None = None  # None = Let's Encrypt production; tests point it at pebble
    nginx_container: str = "ai-meeting-nginx"
    # Swarm: nginx is a service; reload the task of it that runs on this node (found by the
    # service-name label Swarm puts on each task container) instead of a named container.
    nginx_service: str | None = None
    # "auto": standalone on the HTTP-01 port while nothing listens there (first issue on one
    # server, before nginx exists), else webroot. "webroot": always (a swarm's edge nodes issue
    # once nginx serves a placeholder, so any edge node can answer the challenge).
    challenge: str = "auto"
    extra_certbot_args: tuple[str, ...] = ()
    config_dir: str = "/etc/letsencrypt"
    work_dir: str = "/var/lib/letsencrypt"
    logs_dir: str = "/var/log/letsencrypt"
    http_01_port: int = 80  # where the ACME server connects for HTTP-01 (pebble: 5002)
    renew_schedule: str = "17 3,15 * * *"
    ca_bundle: str | None = None  # CA bundle certbot trusts for a private ACME server (pebble)

    def __post_init__(self) -> None:
        if isinstance(self.domains, str) or not isinstance(self.domains, tuple) or not self.domains:
            raise ValueError("domains: at least one domain is required (a tuple of str)")
        for i, d in enumerate(self.domains):
            check_hostname(d, f"domains[{i}]")
            if d.startswith("*."):
                raise ValueError(f"domains[{i}]: wildcards need a DNS challenge; HTTP-01 cannot issue {d!r}")
        if not isinstance(self.email, str) or not _EMAIL_RE.match(self.email):
            raise ValueError(f"email: {self.email!r} is not a valid e-mail address")
        for field in ("install_dir", "webroot", "config_dir", "work_dir", "logs_dir"):
            check_path(getattr(self, field), field)
        if self.acme_server is not None and not _URL_RE.match(self.acme_server):
            raise ValueError(f"acme_server: {self.acme_server!r} must be an https:// directory URL")
        check_ident(self.nginx_container, "nginx_container")
        if self.nginx_service is not None:
            check_ident(self.nginx_service, "nginx_service")
        if self.challenge not in ("auto", "webroot"):
            raise ValueError(f"challenge: {self.challenge!r} must be auto or webroot")
        if isinstance(self.extra_certbot_args, str):
            raise ValueError("extra_certbot_args: a tuple of arguments is required")
        for i, a in enumerate(self.extra_certbot_args):
            if not isinstance(a, str) or not _ARG_RE.match(a):
                raise ValueError(f"extra_certbot_args[{i}]: {a!r} has characters outside [A-Za-z0-9_./:=,@+-]")
        if self.ca_bundle is not None:
            check_path(self.ca_bundle, "ca_bundle")
        check_port(self.http_01_port, "http_01_port")
        check_cron_schedule(self.renew_schedule, "renew_schedule")

    @property
    def cert_name(self) -> str:
        return self.domains[0]

    @property
    def deploy_hook_path(self) -> str:
        return f"{self.install_dir.rstrip('/')}/bin/certbot-deploy-hook.sh"

    @property
    def issue_script_path(self) -> str:
        return f"{self.install_dir.rstrip('/')}/bin/certbot-issue.sh"


CRON_FILE_PATH = "/etc/cron.d/ai-meeting-certbot"


def render_certbot_issue_script(s: CertbotSettings) -> str:
    return render("certbot-issue.sh.j2", s=s)


def render_certbot_deploy_hook(s: CertbotSettings) -> str:
    return render("certbot-deploy-hook.sh.j2", s=s)


def renew_command(s: CertbotSettings) -> list[str]:
    cmd = ["certbot", "renew", "--quiet", "--non-interactive",
           "--config-dir", s.config_dir, "--work-dir", s.work_dir, "--logs-dir", s.logs_dir,
           "--webroot", "-w", s.webroot, "--deploy-hook", s.deploy_hook_path]
    if s.acme_server:
        cmd += ["--server", s.acme_server]
    return cmd + list(s.extra_certbot_args)


def render_certbot_cron(s: CertbotSettings) -> str:
    return render("certbot.cron.j2", s=s, command=shlex.join(renew_command(s)))
