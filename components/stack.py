"""The whole AI Meeting stack: wires the components in dependency order."""

from __future__ import annotations

import pulumi

from config.model import StackConfig

from .api import Api, ApiSecrets
from .backups import Backups
from .bootstrap import Bootstrap
from .datastores import Minio, Placement, Postgres, Redis
from .images import Images
from .monitoring import Monitoring, MonitoringImages
from .network import NetworkAndData
from .proxy import Proxy
from .secrets import Secrets
from .service import DockerSite
from .target import HostShell, make_docker_provider, ssh_connection
from .tls import Tls
from .web import Web


class AiMeetingStack(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ai-meeting:stack:AiMeeting", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        stack = pulumi.get_stack()

        connection = ssh_connection(cfg.target) if cfg.target.kind == "ssh" else None  # type: ignore[arg-type]
        self.bootstrap = Bootstrap("bootstrap", cfg, connection, child) if connection else None
        ready = self.bootstrap.done if self.bootstrap else None
        bootstrap_done = self.bootstrap.steps[-1:] if self.bootstrap else []
        provider = make_docker_provider(cfg, stack, ready=ready, opts=child)
        shell = HostShell(cfg, connection, stack)

        self.secrets = Secrets("secrets", cfg, child)
        self.tls = Tls("tls", cfg, shell, bootstrap_done, child)
        data = NetworkAndData("network", cfg, provider, child)
        images = Images("images", cfg, provider, bootstrap_done, child)
        site = DockerSite(cfg, provider, data.network_name)

        def place(service: str) -> Placement:
            return Placement(site, images.ids[service], data.volumes[service])

        self.postgres = Postgres("postgres", place("postgres"), self.secrets.db_password, shell, child)
        self.redis = Redis("redis", place("redis"), self.secrets.redis_password, child)
        self.minio = Minio("minio", place("minio"), self.secrets.minio_password, shell, child)

        s = self.secrets
        api_secrets = pulumi.Output.all(
            s.db_password, s.redis_password, s.minio_password, s.turn_password, s.jwt_secret
        ).apply(lambda v: ApiSecrets(*v, smtp_password=cfg.smtp.password.get_secret_value()))
        self.api = Api(
            "api",
            site=site,
            image=images.ids["api"],
            secrets=api_secrets,
            shell=shell,
            depends_on=[self.postgres.container, self.postgres.password_synced, self.redis.container, self.minio.container, self.minio.bucket_ready],
            opts=child,
        )
        # web needs nothing of the API: it starts with the data services, off the critical path.
        self.web = Web("web", site=site, image=images.ids["web"], depends_on=[], opts=child)
        self.proxy = Proxy(
            "proxy",
            site=site,
            image=images.ids["nginx"],
            tls_material=self.tls.material,
            api_replicas=self.api.replicas,
            api_port=self.api.port,
            web=self.web.container,
            web_port=self.web.port,
            shell=shell,
            depends_on=[self.api.migrations] if self.api.migrations else [],
            opts=child,
        )
        self.backups = (
            Backups("backups", cfg, shell, [self.postgres.container, self.redis.container, self.minio.container], child)
            if cfg.backup.enabled and cfg.is_remote
            else None
        )
        self.monitoring = (
            Monitoring(
                "monitoring", site=site,
                images=MonitoringImages(
                    prometheus=images.ids["prometheus"], node_exporter=images.ids["node_exporter"],
                    blackbox_exporter=images.ids["blackbox_exporter"], grafana=images.ids.get("grafana"),
                    alertmanager=images.ids.get("alertmanager"),
                ),
                depends_on=self.api.replicas, opts=child,
            )
            if cfg.monitoring.enabled
            else None
        )
        self.outputs = stack_outputs(cfg, self)
        self.register_outputs(self.outputs)


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
        "backup": {"enabled": backups, "schedule": cfg.backup.schedule, "retention_days": cfg.backup.retention_days},
    }


def stack_outputs(cfg: StackConfig, stack: "AiMeetingStack") -> dict[str, object]:
    """What other stacks read with StackReference (README: Outputs). Names are a contract:
    add, don't rename."""
    outputs = common_outputs(cfg, stack.secrets, network=f"{cfg.name_prefix}-network", api=stack.api.upstreams,
                             web=stack.web.upstream, backups=stack.backups is not None)
    if stack.monitoring:
        outputs["prometheus_url"] = stack.monitoring.prometheus_url
    if stack.monitoring and stack.monitoring.grafana_url:
        outputs["grafana_url"] = stack.monitoring.grafana_url
        outputs["grafana_admin_password"] = pulumi.Output.secret(stack.monitoring.grafana_admin_password)
    if stack.bootstrap:
        outputs["preflight_report"] = stack.bootstrap.preflight_report
    return outputs
