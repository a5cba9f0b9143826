"""The AI Meeting services on a Docker Swarm (target.kind swarm).

The same definitions as on one server (components/catalogue.py), as `docker.Service`s
(components/on_swarm.py), and the same steps around them, run on the node that has what they
need: the password sync and the bucket on the data node (where those tasks run), migrations
through the manager (a throwaway container on the attachable overlay network), the post-deploy
check on every edge node, backups with their cron on the data node.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from render.backup import BackupSettings

from . import catalogue, on_swarm
from .backups import Backups, OffsiteCredentials
from .on_swarm import SwarmSite
from .target import HostShell


@dataclass(frozen=True)
class SwarmServicesArgs:
    name_prefix: str
    node_count: int
    postgres: catalogue.PostgresArgs
    redis: catalogue.RedisArgs
    minio: catalogue.MinioArgs
    api: catalogue.ApiArgs
    web: catalogue.WebArgs
    nginx: catalogue.NginxArgs
    monitoring: catalogue.MonitoringArgs | None
    db_password_rotation: int
    canonical_domain: str
    backup: BackupSettings | None
    offsite: OffsiteCredentials | None
    protect_data: bool  # keep the data volumes on `destroy` (prod)


class SwarmServices(pulumi.ComponentResource):
    api: docker.Service
    web: docker.Service
    nginx: docker.Service
    postgres: docker.Service
    redis: docker.Service
    minio: docker.Service
    network: docker.Network

    def __init__(
        self,
        name: str,
        args: SwarmServicesArgs,
        provider: docker.Provider,
        *,
        manager: HostShell,
        data_node: HostShell,
        edge_nodes: list[tuple[str, HostShell]],
        tls_ready: list[pulumi.Resource],
        issue_certificates: Callable[[list[pulumi.Resource]], list[pulumi.Resource]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("ai-meeting:swarm:Services", name, None, opts)
        prefix = args.name_prefix
        self.network = docker.Network(
            "network",
            name=f"{prefix}-network",
            driver="overlay",
            attachable=True,  # the one-shot migration container joins it
            labels=[docker.NetworkLabelArgs(label="ai-meeting.stack", value=pulumi.get_stack())],
            opts=pulumi.ResourceOptions(parent=self, provider=provider),
        )
        site = SwarmSite(provider=provider, network=self.network.name, name_prefix=prefix,
                         node_count=args.node_count, edge_count=len(edge_nodes))

        # --- data services: pinned to the data node with their volumes --------------------
        # The engine creates the named volumes on the data node; `destroy` removes them (after
        # the services) unless the data is protected, as one server's volume resources are.
        ops = (("prometheus",) if args.monitoring else ()) + (
            ("alertmanager",) if args.monitoring and args.monitoring.alertmanager_image is not None else ())
        volumes = [f"{prefix}-{v}-data" for v in ("postgres", "redis", "minio", *ops)]
        data_volumes = data_node.run(
            "data-volumes",
            "echo 'data volumes: " + " ".join(volumes) + "'",
            delete=None if args.protect_data else "docker volume rm -f " + " ".join(volumes) + " >/dev/null",
            parent=self,
            triggers=[" ".join(volumes), str(args.protect_data)],
        )
        self.postgres = on_swarm.service(catalogue.postgres(args.postgres), site, parent=self, depends_on=[data_volumes])
        script, inner = catalogue.exec_in_service("docker", f"{prefix}-postgres", catalogue.PASSWORD_SYNC_SH)
        password_synced = data_node.run(
            "postgres-password-sync", script, stdin=inner, parent=self,
            triggers=[self.postgres.id, str(args.db_password_rotation)], depends_on=[self.postgres],
        )
        self.redis = on_swarm.service(catalogue.redis(args.redis), site, parent=self, depends_on=[data_volumes])
        self.minio = on_swarm.service(catalogue.minio(args.minio), site, parent=self, depends_on=[data_volumes])
        script, inner = catalogue.exec_in_service("docker", f"{prefix}-minio", catalogue.bucket_sh(args.minio.minio.bucket))
        bucket = data_node.run(
            "minio-bucket", script, stdin=inner, parent=self,
            triggers=[self.minio.id, args.minio.minio.bucket], depends_on=[self.minio],
        )

        # --- API: migrations, then replicas anywhere, start-first, rolled back by Swarm ----
        api = args.api.api
        api_deps: list[pulumi.Resource] = [self.postgres, password_synced, self.redis, self.minio, bucket]
        self.migrations = None
        if api.run_migrations:
            self.migrations = manager.run(
                "api-migrations",
                pulumi.Output.all(self.network.name, args.api.image).apply(
                    lambda v: catalogue.migrate_script("docker", v[0], v[1], api.migrate_command)
                ),
                stdin=pulumi.Output.secret(args.api.environment).apply(catalogue.env_file),
                parent=self,
                triggers=[args.api.image, " ".join(api.migrate_command)],
                depends_on=api_deps,
            )
            api_deps.append(self.migrations)
        self.api = on_swarm.service(catalogue.api(args.api), site, parent=self, depends_on=api_deps)
        self.web = on_swarm.service(catalogue.web(args.web), site, parent=self)

        # --- nginx: the edge, host-mode ports, names re-resolved through Docker's DNS -----
        self.nginx = on_swarm.service(catalogue.nginx(args.nginx), site, parent=self,
                                      depends_on=[self.api, self.web, *tls_ready])
        # Let's Encrypt: each edge node's certificate once nginx answers challenges everywhere.
        issued = issue_certificates([self.nginx]) if issue_certificates else []
        self.verified = [
            shell.run(f"verify-deploy-{key}", catalogue.verify_script(args.canonical_domain, args.nginx.https_port),
                      parent=self, triggers=[self.nginx.id, args.api.image, args.nginx.conf],
                      depends_on=[self.nginx, self.api, *issued])
            for key, shell in edge_nodes
        ]

        # --- operations --------------------------------------------------------------------
        self.monitoring: list[docker.Service] = []
        if args.monitoring:
            m = args.monitoring
            node_exporter = on_swarm.service(catalogue.node_exporter(m), site, parent=self)
            blackbox = on_swarm.service(catalogue.blackbox_exporter(m), site, parent=self)
            # Alertmanager keeps silences and its notification log on the data node's volume.
            alertmanager = ([on_swarm.service(dataclasses.replace(catalogue.alertmanager(m), role="data"), site, parent=self,
                                              depends_on=[data_volumes])] if m.alertmanager_image is not None else [])
            # Prometheus keeps its data on the data node's volume, like the datastores.
            prometheus = on_swarm.service(dataclasses.replace(catalogue.prometheus(m), role="data"), site, parent=self,
                                          depends_on=[self.api, node_exporter, blackbox, data_volumes, *alertmanager])
            self.monitoring = [node_exporter, blackbox, prometheus, *alertmanager]
        self.backups = (
            Backups("backups", args.backup, data_node, [self.postgres, self.redis, self.minio], pulumi.ResourceOptions(parent=self),
                    offsite=args.offsite)
            if args.backup
            else None
        )
        self.register_outputs({"network": self.network.name})
