"""The API on one server (R5, R10, R14, R15, R20): migrations, then N replicas.

Replicas are auto-named and publish no host port, so a new image or setting starts new
containers (healthy first, `wait=True`) while the old ones still serve. nginx's upstream
lists the replicas by container name (components/proxy.py) and is reloaded before Pulumi
removes the old ones at the end of the update: no request is sent to a replica that is gone.
Each replica also answers on the network aliases `api` and `api-<i>`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from config.model import StackConfig

from . import catalogue, on_server
from .on_server import ServerSite
from .target import HostShell


@dataclass(frozen=True)
class ApiSecrets:
    db_password: str
    redis_password: str
    minio_password: str
    turn_password: str
    jwt_secret: str
    smtp_password: str


def api_environment(cfg: StackConfig, s: ApiSecrets) -> dict[str, str]:
    """The plan's `.env` (§4.3), key for key, with generated secrets and in-network hosts."""
    db, app = cfg.database, cfg.app
    return {
        # Application
        "NODE_ENV": app.node_env,
        "APP_PORT": str(cfg.api.port),
        "TZ": cfg.timezone,
        # Database
        "DATABASE_URL": f"postgresql://{db.user}:{s.db_password}@postgres:5432/{db.name}",
        "DB_HOST": "postgres",
        "DB_PORT": "5432",
        "DB_NAME": db.name,
        "DB_USER": db.user,
        "DB_PASSWORD": s.db_password,
        # Redis
        "REDIS_URL": f"redis://:{s.redis_password}@redis:6379",
        "REDIS_HOST": "redis",
        "REDIS_PORT": "6379",
        "REDIS_PASSWORD": s.redis_password,
        # JWT
        "JWT_SECRET": s.jwt_secret,
        "JWT_EXPIRES_IN": app.jwt_expires_in,
        "REFRESH_TOKEN_EXPIRES_IN": app.refresh_token_expires_in,
        # MinIO
        "MINIO_ROOT_USER": cfg.minio.root_user,
        "MINIO_ROOT_PASSWORD": s.minio_password,
        "MINIO_ENDPOINT": "minio:9000",
        "MINIO_BUCKET": cfg.minio.bucket,
        # SMTP
        "SMTP_HOST": cfg.smtp.host,
        "SMTP_PORT": str(cfg.smtp.port),
        "SMTP_USER": cfg.smtp.user,
        "SMTP_PASSWORD": s.smtp_password,
        # WebRTC
        "STUN_SERVERS": ",".join(cfg.webrtc.stun_servers),
        "TURN_SERVER": cfg.webrtc.turn_server,
        "TURN_USERNAME": cfg.webrtc.turn_username,
        "TURN_PASSWORD": s.turn_password,
        # Monitoring
        "ENABLE_METRICS": str(app.enable_metrics).lower(),
        "METRICS_PORT": str(app.metrics_port),
        # Logging
        "LOG_LEVEL": app.log_level,
        "LOG_FORMAT": app.log_format,
    }


def replica_alias(i: int) -> str:
    return f"api-{i}"


class Api(pulumi.ComponentResource):
    replicas: list[docker.Container]
    upstreams: list[str]
    port: int
    migrations: pulumi.Resource | None

    def __init__(
        self,
        name: str,
        *,
        args: catalogue.ApiArgs,
        site: ServerSite,
        shell: HostShell,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("ai-meeting:api:Api", name, None, opts)
        api = args.api
        self.migrations = None
        if api.run_migrations:
            # Before the new release's replicas start, in a throwaway container (catalogue).
            self.migrations = shell.run(
                "api-migrations",
                pulumi.Output.all(site.network_name, args.image).apply(
                    lambda v: catalogue.migrate_script(shell.docker_cli, v[0], v[1], api.migrate_command)
                ),
                stdin=pulumi.Output.secret(args.environment).apply(catalogue.env_file),
                parent=self,
                # Re-run when the image (new release) or the command changes.
                triggers=[args.image, " ".join(api.migrate_command)],
                depends_on=depends_on,
            )
        self.replicas = on_server.containers(
            catalogue.api(args), site, parent=self,
            # Starts only after db/redis/minio are healthy (R10) and the schema is migrated.
            depends_on=[*depends_on, *([self.migrations] if self.migrations else [])],
        )
        self.upstreams = [f"{replica_alias(i)}:{api.port}" for i in range(1, api.replicas + 1)]
        self.port = api.port
        self.register_outputs({"replicas": [c.name for c in self.replicas], "upstreams": self.upstreams})
