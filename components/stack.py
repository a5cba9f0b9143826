"""The AI Meeting stack on one server (target local or ssh): the components in dependency order.

This module, components/swarm_stack.py and components/assembly.py are the only readers of
`StackConfig`; every component gets narrow args.
"""

from __future__ import annotations

import pulumi

from config.model import LocalTarget, SshTarget, StackConfig
from render.postgres_upgrade import major_of

from . import assembly
from .api import Api
from .backups import Backups
from .bootstrap import Bootstrap
from .datastores import Minio, Postgres, Redis
from .images import Images
from .monitoring import Monitoring
from .network import NetworkAndData
from .on_server import ServerSite, pids_limits_script
from .proxy import ProxyArgs, Proxy
from .releases import release_history
from .secrets import Secrets
from .target import HostShell, make_docker_provider, server_identity, ssh_connection
from .tls import Tls
from .web import Web


class AiMeetingStack(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ai-meeting:stack:AiMeeting", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        stack = pulumi.get_stack()
        target = cfg.target
        assert isinstance(target, (LocalTarget, SshTarget))
        server = isinstance(target, SshTarget)

        connection = ssh_connection(target) if isinstance(target, SshTarget) else None
        # Every step on the server re-runs on a new server at the same address (README:
        # Disaster recovery onto a new server).
        shell = HostShell(target, connection, stack, server_id=server_identity(HostShell(target, connection, stack)))
        self.bootstrap = (Bootstrap("bootstrap", assembly.ssh_bootstrap_args(cfg, shell.server_id), connection, child)
                          if connection else None)
        ready = self.bootstrap.done if self.bootstrap else None
        bootstrap_done = self.bootstrap.steps[-1:] if self.bootstrap else []
        provider = make_docker_provider(target, stack, ready=ready, opts=child)

        self.secrets = Secrets("secrets", cfg.rotation, cfg.protect, child)
        self.tls = Tls("tls", assembly.tls_args(cfg), shell, bootstrap_done, child)
        data = NetworkAndData("network", name_prefix=cfg.name_prefix, data_dir=f"{cfg.install_dir}/data" if server else None,
                              protect=cfg.protect, provider=provider, opts=child)
        refs = assembly.image_refs(cfg)
        images = Images("images", refs, cfg.images, provider, bootstrap_done,
                        ssh_target=target if server else None, server_id=shell.server_id, opts=child)
        ids = images.ids
        site = ServerSite(provider=provider, network_name=data.network_name, name_prefix=cfg.name_prefix,
                          volumes={k: v.name for k, v in data.volumes.items()}, bind_address=cfg.nginx.bind_address)

        self.postgres = Postgres("postgres", assembly.postgres_args(cfg, ids["postgres"], self.secrets), site, shell,
                                 cfg.rotation.db_password, assembly.major_upgrade(cfg), child)
        self.redis = Redis("redis", assembly.redis_args(cfg, ids["redis"], self.secrets), site, child)
        self.minio = Minio("minio", assembly.minio_args(cfg, ids["minio"], self.secrets), site, shell, child)
        self.api = Api(
            "api",
            args=assembly.api_args(cfg, ids["api"], self.secrets),
            site=site,
            shell=shell,
            depends_on=[self.postgres.container, self.postgres.password_synced, self.postgres.ready, self.redis.container,
                        self.minio.container, self.minio.bucket_ready],
            opts=child,
        )
        # web needs nothing of the API: it starts with the data services, off the critical path.
        self.web = Web("web", args=assembly.web_args(cfg, ids["web"]), site=site, opts=child)
        self.proxy = Proxy(
            "proxy",
            args=ProxyArgs(
                image=ids["nginx"], limits=cfg.resources.nginx, timezone=cfg.timezone,
                site=assembly.nginx_site(cfg, [f"api:{cfg.api.port}"], f"web:{cfg.web.port}", None),
                http_port=cfg.nginx.http_port, https_port=cfg.nginx.https_port, tls=self.tls.material,
                maintenance=assembly.maintenance(cfg),
                loopback_api_port=cfg.loopback_ports.api, log_dir=f"{cfg.install_dir}/logs/nginx" if server else None,
                hardening=cfg.hardening.nginx,
            ),
            site=site,
            api_replicas=self.api.replicas,
            api_port=self.api.port,
            web=self.web.containers,
            web_port=self.web.port,
            shell=shell,
            depends_on=[self.api.migrations] if self.api.migrations else [],
            opts=child,
        )
        self.backups = (
            Backups("backups", assembly.backup_settings(cfg), shell,
                    [self.postgres.container, self.redis.container, self.minio.container], child,
                    offsite=assembly.offsite_credentials(cfg))
            if assembly.backups_enabled(cfg)
            else None
        )
        self.monitoring = (
            Monitoring(
                "monitoring",
                args=assembly.monitoring_args(cfg, ids, stack),
                grafana_image=ids.get("grafana"),
                grafana_port=cfg.monitoring.grafana_port,
                site=site,
                depends_on=self.api.replicas,
                opts=child,
            )
            if cfg.monitoring.enabled
            else None
        )
        self.pids_limits = apply_pids_limits(shell, site, self)
        self.releases = release_history(refs["api"], refs["web"], ids["api"], ids["web"], self)
        self.outputs = stack_outputs(cfg, self)
        self.register_outputs(self.outputs)


def apply_pids_limits(shell: HostShell, site: ServerSite, parent: pulumi.Resource) -> pulumi.CustomResource:
    """After every container exists: their pids limits (on_server.pids_limits_script), again
    whenever one is replaced (its id is a trigger)."""
    ids = [cid for cid, _ in site.pids_limits]
    limits = [limit for _, limit in site.pids_limits]
    return shell.run(
        "pids-limits",
        pulumi.Output.all(*ids).apply(lambda v: pids_limits_script(shell.docker_cli, list(zip(v, limits)))),
        parent=parent,
        triggers=[*ids, *limits],
    )


def public_url(cfg: StackConfig) -> str:
    port = cfg.nginx.https_port
    return f"https://{cfg.canonical_domain}" + ("" if port == 443 else f":{port}")


def common_outputs(cfg: StackConfig, secrets: Secrets, *, network: pulumi.Input[str], api: object, web: object,
                   backups: bool) -> dict[str, object]:
    """The outputs every target kind has, with the same names and meaning (README: Outputs)."""
    db = cfg.database
    url = public_url(cfg)
    return {
        "environment": cfg.environment,
        "public_url": url,
        "api_url": f"{url}/api",
        "websocket_url": url.replace("https://", "wss://", 1) + "/ws/",
        "health_url": f"{url}/health",
        "api_health_url": f"{url}/api/health",
        "tls_mode": cfg.tls.mode,
        "api_replicas": cfg.api.replicas,
        "network": network,
        "internal_endpoints": {"postgres": "postgres:5432", "redis": "redis:6379", "minio": "minio:9000", "api": api, "web": web},
        "database_url": pulumi.Output.secret(
            pulumi.Output.concat("postgresql://", db.user, ":", secrets.db_password, "@postgres:5432/", db.name)
        ),
        "redis_url": pulumi.Output.secret(pulumi.Output.concat("redis://:", secrets.redis_password, "@redis:6379")),
        "minio": {
            "endpoint": "http://minio:9000",
            "bucket": cfg.minio.bucket,
            "access_key": cfg.minio.root_user,
            "secret_key": pulumi.Output.secret(secrets.minio_password),
        },
        # The major version the stack runs: the next update refuses another one unless asked
        # (components/postgres_major.py).
        "postgres": {"image": cfg.images.postgres, "major": major_of(cfg.images.postgres)},
        "backup": {"enabled": backups, "schedule": cfg.backup.schedule, "retention_days": cfg.backup.retention_days,
                   **({"dir": cfg.backup.dir, "restore_command": f"sudo {cfg.install_dir}/bin/restore.sh"} if backups else {})},
    }


def stack_outputs(cfg: StackConfig, stack: "AiMeetingStack") -> dict[str, object]:
    """What other stacks read with StackReference (README: Outputs). Names are a contract:
    add, don't rename."""
    outputs = common_outputs(cfg, stack.secrets, network=f"{cfg.name_prefix}-network", api=stack.api.upstreams,
                             web=stack.web.upstream, backups=stack.backups is not None)
    outputs.update(offsite_outputs(cfg, stack.backups))
    if stack.monitoring and stack.monitoring.prometheus_url:
        outputs["prometheus_url"] = stack.monitoring.prometheus_url
    if stack.monitoring and stack.monitoring.grafana_url:
        outputs["grafana_url"] = stack.monitoring.grafana_url
        outputs["grafana_admin_password"] = pulumi.Output.secret(stack.monitoring.grafana_admin_password)
    if stack.bootstrap:
        outputs["preflight_report"] = stack.bootstrap.preflight_report
    outputs["releases"] = stack.releases
    return outputs


def offsite_outputs(cfg: StackConfig, backups: Backups | None) -> dict[str, object]:
    """`backup_offsite`: where the copies go and the public recipient; the identity that
    decrypts them as a secret output (README: Off-site backups)."""
    key = backups.offsite_key if backups else None
    if key is None:
        return {}
    o = cfg.backup.offsite
    return {
        "backup_offsite": {"endpoint": o.endpoint, "bucket": o.bucket, "prefix": o.prefix,
                           "retention_days": o.retention_days, "recipient": key.recipient,
                           "restore_command": f"sudo {cfg.install_dir}/bin/offsite-restore.sh latest --identity - --yes"},
        "backup_offsite_identity": key.identity,
    }
