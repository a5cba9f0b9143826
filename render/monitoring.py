"""Prometheus config, alert rules, blackbox modules and Grafana provisioning (R17, plan §9),
as pure functions: settings in, file text out. `promtool check config`, `promtool check rules`
and `promtool test rules` run on the output (tests/render/test_render_monitoring.py).

What is scraped: every API replica's metrics port (job `api`, one target per replica alias, so
a stopped replica is a target `up == 0`), Prometheus itself, the node exporter (disk, and on
servers the backup timestamp from the textfile collector) and, through the blackbox exporter,
each service's health (HTTP/TCP probes, job `probe`) and the certificate nginx serves.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import yaml

from ._templating import check_hostname, check_path

# The backup script writes this gauge (unix time of the last complete backup) into the node
# exporter's textfile directory on servers.
BACKUP_METRIC = "ai_meeting_backup_last_success_timestamp_seconds"
BACKUP_FAILED_METRIC = "ai_meeting_backup_last_run_failed"  # 1 after a failed run (backup.sh)
DRILL_METRIC = "ai_meeting_restore_drill_last_success_timestamp_seconds"  # restore-drill.sh
DRILL_FAILED_METRIC = "ai_meeting_restore_drill_last_run_failed"
OFFSITE_METRIC = "ai_meeting_backup_offsite_last_success_timestamp_seconds"  # offsite-backup.sh
RULES_PATH = "/etc/prometheus/alert-rules.yml"
DATASOURCE_UID = "ai-meeting-prometheus"
DASHBOARD_DIR = "/var/lib/grafana/dashboards"
# Mounts that are not disks (the node exporter already drops overlay, proc, sysfs and friends).
_NOT_DISKS = 'fstype!~"tmpfs|ramfs|overlay|squashfs|nsfs"'


def _check_duration(value: str, what: str) -> str:
    if not isinstance(value, str) or not re.match(r"^([0-9]+(ms|s|m|h|d|w|y))+$", value):
        raise ValueError(f"{what}: {value!r} is not a Prometheus duration")
    return value


def _check_target(value: str, what: str) -> str:
    host, _, port = value.rpartition(":")
    check_hostname(host, what)
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{what}: {value!r} must be host:port")
    return value


@dataclass(frozen=True)
class AlertSettings:
    target_down_for: str = "2m"
    api_error_ratio: float = 0.05
    api_errors_for: str = "5m"
    disk_used_percent: int = 85
    disk_for: str = "10m"
    backup_max_age_hours: int = 26
    backup_for: str = "10m"
    certificate_min_days: int = 14
    certificate_for: str = "1h"
    # Only where backups run (servers): elsewhere a missing backup metric is no alert.
    backups: bool = True
    # Where the weekly restore drill runs (servers with backups and backup.drill_schedule): the
    # last good drill older than this, or the last drill failed, alerts.
    restore_drills: bool = True
    drill_max_age_days: int = 8
    # backup.offsite: the last off-site copy older than backup_max_age_hours alerts too.
    offsite_backups: bool = False
    # Docker Swarm: a task that stops vanishes from DNS instead of being scraped as down, so
    # TargetDown also fires when fewer API tasks than this answer.
    expected_api_replicas: int | None = None

    def __post_init__(self) -> None:
        for name in ("target_down_for", "api_errors_for", "disk_for", "backup_for", "certificate_for"):
            _check_duration(getattr(self, name), name)
        if not 0 < self.api_error_ratio < 1:
            raise ValueError(f"api_error_ratio: {self.api_error_ratio!r} must be between 0 and 1")
        if not 0 < self.disk_used_percent < 100:
            raise ValueError(f"disk_used_percent: {self.disk_used_percent!r} must be between 0 and 100")


@dataclass(frozen=True)
class HttpProbe:
    name: str  # the `service` label of the probe's series
    url: str
    module: str = "http_2xx"


@dataclass(frozen=True)
class PrometheusSettings:
    api_targets: tuple[str, ...]  # host:port of every API replica's metrics endpoint
    scrape_interval: str = "15s"
    evaluation_interval: str = "15s"
    stack: str = "dev"
    node_exporter: str | None = "node-exporter:9100"
    blackbox_exporter: str | None = "blackbox-exporter:9115"
    http_probes: tuple[HttpProbe, ...] = ()
    tcp_probes: tuple[tuple[str, str], ...] = ()  # (service, host:port)
    rules_path: str = RULES_PATH
    # Docker Swarm (dnsrr): find the API tasks and the node exporters by DNS (one address per
    # running task) instead of fixed targets; api_targets and node_exporter are then the
    # single `service:port` to resolve.
    dns_discovery: bool = False
    # host:port of each Alertmanager Prometheus sends its alerts to (and scrapes, job
    # `alertmanager`); () = alerts stay in Prometheus.
    alertmanagers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.api_targets, str) or not self.api_targets:
            raise ValueError("api_targets: at least one host:port is required")
        for i, t in enumerate(self.api_targets):
            _check_target(t, f"api_targets[{i}]")
        _check_duration(self.scrape_interval, "scrape_interval")
        _check_duration(self.evaluation_interval, "evaluation_interval")
        for what in ("node_exporter", "blackbox_exporter"):
            if getattr(self, what) is not None:
                _check_target(getattr(self, what), what)
        for service, target in self.tcp_probes:
            _check_target(target, f"tcp_probes[{service}]")
        if (self.http_probes or self.tcp_probes) and self.blackbox_exporter is None:
            raise ValueError("http_probes/tcp_probes need blackbox_exporter")
        check_path(self.rules_path, "rules_path")
        if isinstance(self.alertmanagers, str):
            raise ValueError("alertmanagers: a tuple of host:port")
        for i, t in enumerate(self.alertmanagers):
            _check_target(t, f"alertmanagers[{i}]")


def _dump(doc: object) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120)


def _probe_job(name: str, module: str, targets: list[dict], blackbox: str, interval: str) -> dict:
    return {
        "job_name": name,
        "metrics_path": "/probe",
        "params": {"module": [module]},
        "scrape_interval": interval,
        "static_configs": targets,
        # The standard blackbox relabelling: the target becomes a parameter, the exporter the address.
        "relabel_configs": [
            {"source_labels": ["__address__"], "target_label": "__param_target"},
            {"source_labels": ["__param_target"], "target_label": "instance"},
            {"target_label": "__address__", "replacement": blackbox},
        ],
    }


def render_prometheus_config(s: PrometheusSettings) -> str:
    def by_dns(target: str, labels: dict[str, str]) -> dict:
        host, _, port = target.rpartition(":")
        return {"dns_sd_configs": [{"names": [host], "type": "A", "port": int(port), "refresh_interval": "15s"}],
                "relabel_configs": [{"target_label": k, "replacement": v} for k, v in labels.items()]}

    jobs: list[dict] = [{"job_name": "prometheus", "static_configs": [{"targets": ["localhost:9090"]}]}]
    if s.dns_discovery:
        jobs.append({"job_name": "api", **by_dns(s.api_targets[0], {"service": "api"})})
    else:
        jobs.append({
            "job_name": "api",
            "static_configs": [
                {"targets": [t], "labels": {"service": "api", "replica": str(i)}}
                for i, t in enumerate(s.api_targets, start=1)
            ],
        })
    if s.node_exporter and s.dns_discovery:
        jobs.append({"job_name": "node", **by_dns(s.node_exporter, {})})
    elif s.node_exporter:
        jobs.append({"job_name": "node", "static_configs": [{"targets": [s.node_exporter]}]})
    if s.blackbox_exporter:
        jobs.append({"job_name": "blackbox", "static_configs": [{"targets": [s.blackbox_exporter]}]})
        by_module: dict[str, list[dict]] = {}
        for p in s.http_probes:
            by_module.setdefault(p.module, []).append({"targets": [p.url], "labels": {"service": p.name}})
        for module, targets in by_module.items():
            jobs.append(_probe_job(f"probe-{module}", module, targets, s.blackbox_exporter, s.scrape_interval))
        if s.tcp_probes:
            targets = [{"targets": [t], "labels": {"service": name}} for name, t in s.tcp_probes]
            jobs.append(_probe_job("probe-tcp_connect", "tcp_connect", targets, s.blackbox_exporter, s.scrape_interval))
    if s.alertmanagers:
        jobs.append({"job_name": "alertmanager", "static_configs": [{"targets": list(s.alertmanagers)}]})
    doc: dict = {
        "global": {
            "scrape_interval": s.scrape_interval,
            "evaluation_interval": s.evaluation_interval,
            "external_labels": {"stack": s.stack},
        },
    }
    if s.alertmanagers:
        doc["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": list(s.alertmanagers)}]}]}
    doc["rule_files"] = [s.rules_path]
    doc["scrape_configs"] = jobs
    return _dump(doc)


def alert_rules(a: AlertSettings) -> list[dict]:
    """The alerting rules as data (render_alert_rules writes them)."""
    ratio = (
        'sum by (job) (rate(http_requests_total{job="api",status=~"5.."}[5m]))'
        ' / sum by (job) (rate(http_requests_total{job="api"}[5m]))'
    )
    disk = (
        f"100 * (1 - node_filesystem_avail_bytes{{{_NOT_DISKS}}}"
        f" / node_filesystem_size_bytes{{{_NOT_DISKS}}})"
    )
    target_down = "up == 0"
    if a.expected_api_replicas:
        target_down += (
            f' or label_replace((count(up{{job="api"}} == 1) or vector(0)) < {a.expected_api_replicas},'
            ' "job", "api", "", "")'
        )
    rules = [
        {
            "alert": "TargetDown",
            "expr": target_down,
            "for": a.target_down_for,
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "{{ $labels.job }} target {{ $labels.instance }} is down",
                "description": "Prometheus cannot scrape {{ $labels.instance }} (job {{ $labels.job }}).",
            },
        },
        {
            "alert": "ServiceProbeFailed",
            "expr": 'probe_success{job=~"probe-.*"} == 0',
            "for": a.target_down_for,
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "{{ $labels.service }} fails its health probe",
                "description": "The blackbox probe of {{ $labels.instance }} fails.",
            },
        },
        {
            "alert": "ApiHighErrorRate",
            "expr": f"({ratio}) > {a.api_error_ratio:g}",
            "for": a.api_errors_for,
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": f"More than {a.api_error_ratio:.0%} of API responses are 5xx",
                "description": "{{ $value | humanizePercentage }} of API responses over 5 minutes are 5xx.",
            },
        },
        {
            "alert": "DiskAlmostFull",
            "expr": f"({disk}) > {a.disk_used_percent}",
            "for": a.disk_for,
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": f"Disk {{{{ $labels.mountpoint }}}} is more than {a.disk_used_percent}% full",
                "description": "{{ $labels.mountpoint }} on {{ $labels.instance }} is {{ $value | printf \"%.1f\" }}% full.",
            },
        },
        {
            "alert": "CertificateExpiresSoon",
            "expr": f"probe_ssl_earliest_cert_expiry - time() < {a.certificate_min_days} * 86400",
            "for": a.certificate_for,
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": f"The certificate of {{{{ $labels.instance }}}} expires within {a.certificate_min_days} days",
                "description": "It expires in {{ $value | humanizeDuration }}; certbot renews it (README: Renew certificates).",
            },
        },
    ]
    if a.backups:
        max_age = a.backup_max_age_hours * 3600
        rules += [
            {
                "alert": "BackupTooOld",
                "expr": f"time() - {BACKUP_METRIC} > {max_age}",
                "for": a.backup_for,
                "labels": {"severity": "critical"},
                "annotations": {
                    "summary": f"The last complete backup is older than {a.backup_max_age_hours} h",
                    "description": "Last backup {{ $value | humanizeDuration }} ago; see <install_dir>/logs/backup.log.",
                },
            },
            {
                "alert": "BackupFailed",
                "expr": f"{BACKUP_FAILED_METRIC} == 1",
                "labels": {"severity": "critical"},
                "annotations": {
                    "summary": "The last backup run failed",
                    "description": "See <install_dir>/logs/backup.log; the partial backup is kept as <stamp>.failed and "
                                   "older backups are not pruned.",
                },
            },
            {
                # No backup metric at all for as long as a backup may be old: never ran, or the
                # textfile collector lost it.
                "alert": "BackupMissing",
                "expr": f"absent({BACKUP_METRIC})",
                "for": f"{a.backup_max_age_hours}h",
                "labels": {"severity": "critical"},
                "annotations": {
                    "summary": f"No backup metric for {a.backup_max_age_hours} h",
                    "description": f"{BACKUP_METRIC} is missing: the backup never completed or its metric file is gone.",
                },
            },
        ]
    if a.backups and a.offsite_backups:
        rules.append({
            "alert": "BackupOffsiteTooOld",
            "expr": f"time() - {OFFSITE_METRIC} > {a.backup_max_age_hours * 3600} or absent({OFFSITE_METRIC})",
            "for": f"{a.backup_max_age_hours}h",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": f"No off-site copy of a backup for {a.backup_max_age_hours} h",
                "description": "See <install_dir>/logs/backup.log (README: Off-site backups).",
            },
        })
    if a.backups and a.restore_drills:
        max_age = a.drill_max_age_days * 86400
        rules += [
            {
                "alert": "RestoreDrillFailed",
                "expr": f"{DRILL_FAILED_METRIC} == 1",
                "labels": {"severity": "critical"},
                "annotations": {
                    "summary": "The last restore drill failed: the newest backup may not restore",
                    "description": "See <install_dir>/logs/restore-drill.log (README: Restore drills).",
                },
            },
            {
                "alert": "RestoreDrillTooOld",
                "expr": f"time() - {DRILL_METRIC} > {max_age}",
                "for": "1h",
                "labels": {"severity": "warning"},
                "annotations": {
                    "summary": f"The last good restore drill is older than {a.drill_max_age_days} days",
                    "description": "Last good drill {{ $value | humanizeDuration }} ago (README: Restore drills).",
                },
            },
            {
                # No drill result at all for as long as a drill may be old: it never succeeded.
                "alert": "RestoreDrillMissing",
                "expr": f"absent({DRILL_METRIC})",
                "for": f"{a.drill_max_age_days * 24}h",
                "labels": {"severity": "warning"},
                "annotations": {
                    "summary": f"No good restore drill in {a.drill_max_age_days} days",
                    "description": f"{DRILL_METRIC} is missing: no drill has succeeded (README: Restore drills).",
                },
            },
        ]
    return rules


def render_alert_rules(a: AlertSettings) -> str:
    return _dump({"groups": [{"name": "ai-meeting", "rules": alert_rules(a)}]})


def render_blackbox_config(tls_server_name: str | None, verify_tls: bool) -> str:
    """Probe modules. `https_2xx` checks the certificate nginx serves for the canonical domain
    (its expiry is `probe_ssl_earliest_cert_expiry`); self-signed dev certificates are read but
    not verified."""
    tls: dict = {"insecure_skip_verify": not verify_tls}
    https: dict = {"fail_if_not_ssl": True, "tls_config": tls}
    if tls_server_name:
        # SNI, certificate name and Host header of the canonical domain, as a browser sends them.
        tls["server_name"] = check_hostname(tls_server_name, "tls_server_name")
        https["headers"] = {"Host": tls_server_name}
    http = {"prober": "http", "timeout": "5s", "http": {"preferred_ip_protocol": "ip4", "follow_redirects": False}}
    doc = {
        "modules": {
            "http_2xx": http,
            "https_2xx": {**http, "http": {**http["http"], **https}},
            "tcp_connect": {"prober": "tcp", "timeout": "5s", "tcp": {"preferred_ip_protocol": "ip4"}},
        }
    }
    return _dump(doc)


# ---- Grafana provisioning (declared for servers; checked as files here) ----------------------


def render_grafana_datasource(prometheus_url: str = "http://prometheus:9090") -> str:
    return _dump({
        "apiVersion": 1,
        "datasources": [{
            "name": "Prometheus",
            "uid": DATASOURCE_UID,
            "type": "prometheus",
            "access": "proxy",
            "url": prometheus_url,
            "isDefault": True,
            "editable": False,
        }],
    })


def render_grafana_dashboard_provider() -> str:
    return _dump({
        "apiVersion": 1,
        "providers": [{
            "name": "ai-meeting",
            "folder": "AI Meeting",
            "type": "file",
            "disableDeletion": True,
            "allowUiUpdates": False,
            "options": {"path": DASHBOARD_DIR},
        }],
    })


@dataclass(frozen=True)
class Panel:
    title: str
    expr: str
    unit: str = "short"
    legend: str = ""


DASHBOARD_PANELS: tuple[Panel, ...] = (
    Panel("Targets up", "sum by (job) (up)", legend="{{job}}"),
    Panel("API requests per second by status", 'sum by (status) (rate(http_requests_total{job="api"}[5m]))', "reqps", "{{status}}"),
    # `or vector(0)`: no 5xx series yet is a ratio of 0, not an empty panel.
    Panel("API 5xx ratio",
          '(sum(rate(http_requests_total{job="api",status=~"5.."}[5m])) or vector(0)) / sum(rate(http_requests_total{job="api"}[5m]))',
          "percentunit"),
    Panel("API dependencies reachable", "min by (dependency) (ai_meeting_api_dependency_up)", legend="{{dependency}}"),
    Panel("Service probes", 'probe_success{job=~"probe-.*"}', legend="{{service}}"),
    Panel("Disk used", f"100 * (1 - node_filesystem_avail_bytes{{{_NOT_DISKS}}} / node_filesystem_size_bytes{{{_NOT_DISKS}}})",
          "percent", "{{mountpoint}}"),
    Panel("Certificate expires in", "probe_ssl_earliest_cert_expiry - time()", "s", "{{instance}}"),
    Panel("Backup age", f"time() - {BACKUP_METRIC}", "s"),
    Panel("API replica uptime", 'time() - process_start_time_seconds{job="api"}', "s", "{{instance}}"),
)


def render_grafana_dashboard(panels: tuple[Panel, ...] = DASHBOARD_PANELS) -> str:
    datasource = {"type": "prometheus", "uid": DATASOURCE_UID}
    doc = {
        "uid": "ai-meeting-overview",
        "title": "AI Meeting overview",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "tags": ["ai-meeting"],
        "panels": [
            {
                "id": i,
                "type": "timeseries",
                "title": p.title,
                "datasource": datasource,
                "gridPos": {"x": (i - 1) % 2 * 12, "y": (i - 1) // 2 * 8, "w": 12, "h": 8},
                "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
                "targets": [{"refId": "A", "datasource": datasource, "expr": p.expr, "legendFormat": p.legend}],
            }
            for i, p in enumerate(panels, start=1)
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


# ---- Alertmanager: who is told, and when -------------------------------------------------------

ALERTMANAGER_CONFIG_PATH = "/etc/alertmanager/alertmanager.yml"
_EMAIL_RE = re.compile(r"^[^@\s,<>\"]+@[^@\s,<>\"]+\.[^@\s,<>\"]+$")


@dataclass(frozen=True)
class EmailReceiver:
    to: tuple[str, ...]
    sender: str  # Alertmanager's smtp_from
    smarthost: str  # host:port
    auth_username: str | None = None
    auth_password: str | None = None  # a secret: the rendered file is one too
    require_tls: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.to, str) or not self.to:
            raise ValueError("email.to: at least one address (a tuple)")
        for i, a in enumerate((*self.to, self.sender)):
            if not isinstance(a, str) or not _EMAIL_RE.match(a):
                raise ValueError(f"email.{'to[%d]' % i if i < len(self.to) else 'from'}: {a!r} is not an e-mail address")
        host, sep, port = self.smarthost.rpartition(":")
        if not sep or not port.isdigit() or not 1 <= int(port) <= 65535 or not host:
            raise ValueError(f"email.smarthost: {self.smarthost!r} must be host:port")
        if (self.auth_username is None) != (self.auth_password is None):
            raise ValueError("email.auth_username and email.auth_password go together")


@dataclass(frozen=True)
class AlertmanagerSettings:
    webhook_urls: tuple[str, ...] = ()
    email: EmailReceiver | None = None
    group_by: tuple[str, ...] = ("alertname", "service", "instance")
    group_wait: str = "30s"
    group_interval: str = "5m"
    repeat_interval: str = "4h"
    send_resolved: bool = True
    resolve_timeout: str = "5m"

    def __post_init__(self) -> None:
        if isinstance(self.webhook_urls, str):
            raise ValueError("webhook_urls: a tuple of URLs")
        for i, u in enumerate(self.webhook_urls):
            if not isinstance(u, str) or not re.match(r"^https?://[^\s/]+(/\S*)?$", u):
                raise ValueError(f"webhook_urls[{i}]: must be an http:// or https:// URL")
        if not self.webhook_urls and self.email is None:
            raise ValueError("webhook_urls: at least one receiver (webhook_urls or email)")
        for name in ("group_wait", "group_interval", "repeat_interval", "resolve_timeout"):
            _check_duration(getattr(self, name), name)
        for label in self.group_by:
            if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", label):
                raise ValueError(f"group_by: {label!r} is not a label name")


def render_alertmanager_config(s: AlertmanagerSettings) -> str:
    """alertmanager.yml: one route to one receiver holding every webhook and the e-mail, so each
    alert (and its resolution, with send_resolved) reaches every channel. It holds secrets when
    the e-mail has a password or a webhook URL a token: store and upload it as a secret."""
    glob: dict = {"resolve_timeout": s.resolve_timeout}
    receiver: dict = {"name": "ai-meeting"}
    if s.webhook_urls:
        receiver["webhook_configs"] = [{"url": u, "send_resolved": s.send_resolved} for u in s.webhook_urls]
    if s.email:
        e = s.email
        glob.update(smtp_smarthost=e.smarthost, smtp_from=e.sender, smtp_require_tls=e.require_tls)
        if e.auth_username is not None:
            glob.update(smtp_auth_username=e.auth_username, smtp_auth_password=e.auth_password)
        receiver["email_configs"] = [{"to": ", ".join(e.to), "send_resolved": s.send_resolved}]
    doc = {
        "global": glob,
        "route": {
            "receiver": "ai-meeting",
            "group_by": list(s.group_by),
            "group_wait": s.group_wait,
            "group_interval": s.group_interval,
            "repeat_interval": s.repeat_interval,
        },
        "receivers": [receiver],
    }
    return "# Rendered by render/monitoring.py from monitoring.alertmanager: edit the config, not this file.\n" + _dump(doc)
