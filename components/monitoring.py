"""Optional monitoring (R17, plan §9): Prometheus with alert rules, the node exporter (disk; the
backup timestamp on servers), the blackbox exporter (each service's health and the certificate's
expiry), and Grafana with its data source and dashboard provisioned (`monitoring.grafana`).
Prometheus is on 127.0.0.1:`monitoring.prometheus_port`, Grafana on 127.0.0.1:`grafana_port`;
the exporters publish no port. The files are rendered by render/monitoring.py."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from config.model import StackConfig
from render.monitoring import (
    ALERTMANAGER_CONFIG_PATH,
    DASHBOARD_DIR,
    RULES_PATH,
    AlertmanagerSettings,
    AlertSettings,
    EmailReceiver,
    HttpProbe,
    PrometheusSettings,
    render_alert_rules,
    render_alertmanager_config,
    render_blackbox_config,
    render_grafana_dashboard,
    render_grafana_dashboard_provider,
    render_grafana_datasource,
    render_prometheus_config,
)

from .api import replica_alias
from .service import DockerSite, Health, ServiceSpec, loopback_port, service_container, upload

# The node exporter's textfile directory on a server: the backup script writes its timestamp here.
TEXTFILE_SUBDIR = "metrics"


@dataclass(frozen=True)
class MonitoringImages:
    prometheus: pulumi.Input[str]
    node_exporter: pulumi.Input[str]
    blackbox_exporter: pulumi.Input[str]
    grafana: pulumi.Input[str] | None  # None: no Grafana (monitoring.grafana false)
    alertmanager: pulumi.Input[str] | None = None  # None: monitoring.alertmanager.enabled false


def http_check(url: str) -> Health:
    # The official images have busybox wget, the local ones curl.
    return Health(test=["CMD-SHELL", f"wget -qO /dev/null {url} || curl -fsS -o /dev/null {url}"])


def prometheus_settings(cfg: StackConfig, stack: str) -> PrometheusSettings:
    return PrometheusSettings(
        api_targets=tuple(f"{replica_alias(i)}:{cfg.app.metrics_port}" for i in range(1, cfg.api.replicas + 1)),
        scrape_interval=cfg.monitoring.scrape_interval,
        evaluation_interval=cfg.monitoring.evaluation_interval,
        stack=stack,
        http_probes=(
            # Through nginx as a client sees it: TLS, the certificate (its expiry), the API behind it.
            HttpProbe("nginx", "https://nginx/health", "https_2xx"),
            HttpProbe("api-via-nginx", "https://nginx/api/health", "https_2xx"),  # as the post-deploy check (§7.3)
            HttpProbe("web", f"http://web:{cfg.web.port}/"),
            HttpProbe("minio", "http://minio:9000/minio/health/live"),
        ),
        tcp_probes=(("postgres", "postgres:5432"), ("redis", "redis:6379")),
        rules_path=RULES_PATH,
        alertmanagers=("alertmanager:9093",) if cfg.monitoring.alertmanager.enabled else (),
    )


def alertmanager_settings(cfg: StackConfig) -> AlertmanagerSettings:
    am = cfg.monitoring.alertmanager
    e = am.email
    email = EmailReceiver(
        to=tuple(e.to), sender=e.from_, smarthost=e.smarthost, auth_username=e.auth_username,
        auth_password=e.auth_password.get_secret_value() if e.auth_password else None, require_tls=e.require_tls,
    ) if e else None
    return AlertmanagerSettings(
        webhook_urls=tuple(u.get_secret_value() for u in am.webhook_urls), email=email, group_wait=am.group_wait,
        group_interval=am.group_interval, repeat_interval=am.repeat_interval, send_resolved=am.send_resolved,
    )


def alert_settings(cfg: StackConfig) -> AlertSettings:
    a = cfg.monitoring.alerts
    return AlertSettings(
        target_down_for=a.target_down_for,
        api_error_ratio=a.api_error_ratio,
        api_errors_for=a.api_errors_for,
        disk_used_percent=a.disk_used_percent,
        disk_for=a.disk_for,
        backup_max_age_hours=a.backup_max_age_hours,
        backup_for=a.backup_for,
        certificate_min_days=a.certificate_min_days,
        certificate_for=a.certificate_for,
        # Backups run on servers only (components/backups.py).
        backups=cfg.backup.enabled and cfg.is_remote,
    )


class Monitoring(pulumi.ComponentResource):
    prometheus_url: str
    grafana_url: str | None
    grafana_admin_password: pulumi.Output[str] | None

    def __init__(
        self,
        name: str,
        *,
        site: DockerSite,
        images: MonitoringImages,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("ai-meeting:monitoring:Monitoring", name, None, opts)
        cfg = site.cfg
        mon = cfg.monitoring

        def spec(service: str, image: pulumi.Input[str], **kw) -> ServiceSpec:
            """What every monitoring container shares: its limits, its name, replaced in place."""
            return ServiceSpec(service=service, image=image, limits=cfg.resources.monitoring,
                               container_name=cfg.container_name(service), delete_before_replace=True, **kw)

        textfile = ["--collector.textfile.directory=/textfile"] if cfg.is_remote else []
        node_exporter = service_container(
            "node-exporter",
            spec(
                "node-exporter",
                images.node_exporter,
                # The host's filesystems, read-only: disk usage of the machine, not of the container.
                command=["--path.rootfs=/host", "--web.listen-address=:9100", *textfile],
                volumes=[
                    docker.ContainerVolumeArgs(host_path="/", container_path="/host", read_only=True),
                    *([docker.ContainerVolumeArgs(host_path=f"{cfg.install_dir}/{TEXTFILE_SUBDIR}", container_path="/textfile",
                                                  read_only=True)] if cfg.is_remote else []),
                ],
                health=http_check("http://127.0.0.1:9100/metrics"),
            ),
            site,
            parent=self,
        )
        verify_tls = cfg.tls.mode != "self-signed"
        blackbox = service_container(
            "blackbox-exporter",
            spec(
                "blackbox-exporter",
                images.blackbox_exporter,
                command=["--config.file=/etc/blackbox_exporter/config.yml"],
                uploads=[upload("/etc/blackbox_exporter/config.yml", render_blackbox_config(cfg.canonical_domain, verify_tls))],
                health=http_check("http://127.0.0.1:9115/-/healthy"),
            ),
            site,
            parent=self,
        )
        alertmanager = []
        if images.alertmanager is not None:
            # Silences and the notification log survive a replaced container.
            am_data = docker.Volume(
                "alertmanager-data",
                name=f"{cfg.name_prefix}-alertmanager-data",
                opts=pulumi.ResourceOptions(parent=self, provider=site.provider),
            )
            alertmanager = [service_container(
                "alertmanager",
                spec(
                    "alertmanager",
                    images.alertmanager,
                    command=[f"--config.file={ALERTMANAGER_CONFIG_PATH}", "--storage.path=/alertmanager"],
                    volumes=[docker.ContainerVolumeArgs(volume_name=am_data.name, container_path="/alertmanager")],
                    # A secret: the SMTP password or a webhook token may be in it.
                    uploads=[upload(ALERTMANAGER_CONFIG_PATH, pulumi.Output.secret(render_alertmanager_config(alertmanager_settings(cfg))))],
                    ports=[loopback_port(9093, mon.alertmanager.port)],
                    health=http_check("http://127.0.0.1:9093/-/ready"),
                ),
                site,
                parent=self,
            )]
        # Metrics survive a replaced container (new rules, new image); not backed up.
        data = docker.Volume(
            "prometheus-data",
            name=f"{cfg.name_prefix}-prometheus-data",
            opts=pulumi.ResourceOptions(parent=self, provider=site.provider),
        )
        prometheus = service_container(
            "prometheus",
            spec(
                "prometheus",
                images.prometheus,
                command=[
                    "--config.file=/etc/prometheus/prometheus.yml",
                    "--storage.tsdb.path=/prometheus",
                    f"--storage.tsdb.retention.time={mon.retention}",
                ],
                volumes=[docker.ContainerVolumeArgs(volume_name=data.name, container_path="/prometheus")],
                uploads=[
                    upload("/etc/prometheus/prometheus.yml", render_prometheus_config(prometheus_settings(cfg, pulumi.get_stack()))),
                    upload(RULES_PATH, render_alert_rules(alert_settings(cfg))),
                ],
                ports=[loopback_port(9090, mon.prometheus_port)],
                health=http_check("http://127.0.0.1:9090/-/ready"),
            ),
            site,
            parent=self,
            depends_on=[*depends_on, node_exporter, blackbox, *alertmanager],
        )
        self.prometheus_url = f"http://127.0.0.1:{mon.prometheus_port}"

        self.grafana_url = None
        self.grafana_admin_password = None
        if images.grafana is not None:
            # Not the plan's admin/admin: a generated password, exported as a secret.
            self.grafana_admin_password = random.RandomPassword(
                "grafana-admin-password", length=32, special=False, opts=pulumi.ResourceOptions(parent=self)
            ).result
            service_container(
                "grafana",
                spec(
                    "grafana",
                    images.grafana,
                    envs=pulumi.Output.secret(self.grafana_admin_password).apply(
                        lambda pw: ["GF_SECURITY_ADMIN_USER=admin", f"GF_SECURITY_ADMIN_PASSWORD={pw}", "GF_USERS_ALLOW_SIGN_UP=false"]
                    ),
                    uploads=[
                        upload("/etc/grafana/provisioning/datasources/prometheus.yml", render_grafana_datasource()),
                        upload("/etc/grafana/provisioning/dashboards/ai-meeting.yml", render_grafana_dashboard_provider()),
                        upload(f"{DASHBOARD_DIR}/ai-meeting-overview.json", render_grafana_dashboard()),
                    ],
                    ports=[loopback_port(3000, mon.grafana_port)],
                    health=Health(
                        test=["CMD-SHELL", "wget -qO /dev/null http://127.0.0.1:3000/api/health || curl -fsS http://127.0.0.1:3000/api/health"],
                        start_period="30s",
                    ),
                ),
                site,
                parent=self,
                depends_on=[prometheus],
            )
            self.grafana_url = f"http://127.0.0.1:{mon.grafana_port}"
        self.register_outputs({"prometheus_url": self.prometheus_url, "grafana_url": self.grafana_url})
