"""Optional monitoring (R17): Prometheus scraping the API replicas' metrics port, and
Grafana on 127.0.0.1:3002 with Prometheus provisioned as its data source."""

from __future__ import annotations

import pulumi
import pulumi_random as random


from .api import replica_alias
from .service import DockerSite, Health, ServiceSpec, loopback_port, service_container, upload


def render_prometheus_config(api_replicas: int, metrics_port: int) -> str:
    targets = ", ".join(f'"{replica_alias(i)}:{metrics_port}"' for i in range(1, api_replicas + 1))
    return (
        "global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\n"
        "scrape_configs:\n"
        "  - job_name: ai-meeting-api\n"
        f"    static_configs:\n      - targets: [{targets}]\n"
        "  - job_name: prometheus\n    static_configs:\n      - targets: [\"127.0.0.1:9090\"]\n"
    )


GRAFANA_DATASOURCE = (
    "apiVersion: 1\n"
    "datasources:\n"
    "  - name: Prometheus\n    type: prometheus\n    access: proxy\n"
    "    url: http://prometheus:9090\n    isDefault: true\n"
)


class Monitoring(pulumi.ComponentResource):
    grafana_url: str
    grafana_admin_password: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        site: DockerSite,
        prometheus_image: pulumi.Input[str],
        grafana_image: pulumi.Input[str],
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("ai-meeting:monitoring:Monitoring", name, None, opts)
        cfg = site.cfg
        prom_url = "http://127.0.0.1:9090/-/healthy"
        prometheus = service_container(
            "prometheus",
            ServiceSpec(
                service="prometheus",
                image=prometheus_image,
                limits=cfg.resources.monitoring,
                container_name=cfg.container_name("prometheus"),
                delete_before_replace=True,
                uploads=[upload("/etc/prometheus/prometheus.yml", render_prometheus_config(cfg.api.replicas, cfg.app.metrics_port))],
                ports=[loopback_port(9090, cfg.monitoring.prometheus_port)],
                health=Health(test=["CMD-SHELL", f"wget -qO /dev/null {prom_url} || curl -fsS {prom_url}"]),
            ),
            site,
            parent=self,
            depends_on=depends_on,
        )
        # Not the plan's admin/admin: a generated password, exported as a secret.
        self.grafana_admin_password = random.RandomPassword(
            "grafana-admin-password", length=32, special=False, opts=pulumi.ResourceOptions(parent=self)
        ).result
        graf_url = "http://127.0.0.1:3000/api/health"
        service_container(
            "grafana",
            ServiceSpec(
                service="grafana",
                image=grafana_image,
                limits=cfg.resources.monitoring,
                container_name=cfg.container_name("grafana"),
                delete_before_replace=True,
                envs=pulumi.Output.secret(self.grafana_admin_password).apply(
                    lambda pw: ["GF_SECURITY_ADMIN_USER=admin", f"GF_SECURITY_ADMIN_PASSWORD={pw}", "GF_USERS_ALLOW_SIGN_UP=false"]
                ),
                uploads=[upload("/etc/grafana/provisioning/datasources/prometheus.yml", GRAFANA_DATASOURCE)],
                ports=[loopback_port(3000, cfg.monitoring.grafana_port)],
                health=Health(test=["CMD-SHELL", f"wget -qO /dev/null {graf_url} || curl -fsS {graf_url}"], start_period="30s"),
            ),
            site,
            parent=self,
            depends_on=[prometheus],
        )
        self.grafana_url = f"http://127.0.0.1:{cfg.monitoring.grafana_port}"
        self.register_outputs({"grafana_url": self.grafana_url})
