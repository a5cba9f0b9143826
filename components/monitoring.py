"""Optional monitoring on one server (R17, plan §9): Prometheus with alert rules, the node
exporter (disk; the backup timestamp on servers), the blackbox exporter (each service's health
and the certificate's expiry), and Grafana with its data source and dashboard provisioned.
Prometheus is on 127.0.0.1:`monitoring.prometheus_port`, Grafana on 127.0.0.1:`grafana_port`;
the exporters publish no port. Definitions: components/catalogue.py (shared with the Swarm);
files: render/monitoring.py."""

from __future__ import annotations

import dataclasses

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from render.monitoring import (
    DASHBOARD_DIR,
    render_grafana_dashboard,
    render_grafana_dashboard_provider,
    render_grafana_datasource,
)

from . import catalogue, on_server
from .definition import File
from .on_server import ServerSite

# The node exporter's textfile directory on a server: the backup script writes its timestamp here.
TEXTFILE_SUBDIR = "metrics"


def grafana_files() -> list[File]:
    return [
        File("/etc/grafana/provisioning/datasources/prometheus.yml", render_grafana_datasource()),
        File("/etc/grafana/provisioning/dashboards/ai-meeting.yml", render_grafana_dashboard_provider()),
        File(f"{DASHBOARD_DIR}/ai-meeting-overview.json", render_grafana_dashboard()),
    ]


class Monitoring(pulumi.ComponentResource):
    prometheus_url: str | None
    grafana_url: str | None
    grafana_admin_password: pulumi.Output[str] | None

    def __init__(
        self,
        name: str,
        *,
        args: catalogue.MonitoringArgs,
        grafana_image: pulumi.Input[str] | None,  # None: no Grafana (monitoring.grafana false)
        grafana_port: int | None,
        site: ServerSite,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("ai-meeting:monitoring:Monitoring", name, None, opts)
        (node_exporter,) = on_server.containers(catalogue.node_exporter(args), site, parent=self)
        (blackbox,) = on_server.containers(catalogue.blackbox_exporter(args), site, parent=self)
        alertmanager: list[docker.Container] = []
        if args.alertmanager_image is not None:
            am_data = docker.Volume(
                "alertmanager-data",
                name=f"{site.name_prefix}-alertmanager-data",
                opts=pulumi.ResourceOptions(parent=self, provider=site.provider),
            )
            alertmanager = on_server.containers(
                catalogue.alertmanager(args), dataclasses.replace(site, volumes={**site.volumes, "alertmanager": am_data.name}),
                parent=self,
            )
        data = docker.Volume(
            "prometheus-data",
            name=f"{site.name_prefix}-prometheus-data",
            opts=pulumi.ResourceOptions(parent=self, provider=site.provider),
        )
        prometheus_site = dataclasses.replace(site, volumes={**site.volumes, "prometheus": data.name})
        (prometheus,) = on_server.containers(
            catalogue.prometheus(args), prometheus_site, parent=self,
            depends_on=[*depends_on, node_exporter, blackbox, *alertmanager],
        )
        self.prometheus_url = f"http://127.0.0.1:{args.prometheus_port}" if args.prometheus_port else None
        self.grafana_url = None
        self.grafana_admin_password = None
        if grafana_image is not None:
            # Not the plan's admin/admin: a generated password, exported as a secret.
            self.grafana_admin_password = random.RandomPassword(
                "grafana-admin-password", length=32, special=False, opts=pulumi.ResourceOptions(parent=self)
            ).result
            on_server.containers(
                catalogue.grafana(catalogue.GrafanaArgs(
                    image=grafana_image, limits=args.limits, admin_password=self.grafana_admin_password,
                    files=grafana_files(), port=grafana_port, hardening=args.hardening)),
                site, parent=self, depends_on=[prometheus],
            )
            self.grafana_url = f"http://127.0.0.1:{grafana_port}" if grafana_port else None
        self.register_outputs({"prometheus_url": self.prometheus_url, "grafana_url": self.grafana_url})
