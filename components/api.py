"""The API service (R5, R10, R14, R15, R20): N replicas, migrations, verification.

Replicas are auto-named and publish no host port, so a new image or setting starts new
containers (healthy first, `wait=True`) while the old ones still serve. nginx's upstream
lists the replicas by container name (components/proxy.py) and is reloaded before Pulumi
removes the old ones at the end of the update: no request is sent to a replica that is gone.
Each replica also answers on the network aliases `api` and `api-<i>`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from config.model import StackConfig

from .service import DockerSite, Health, ServiceSpec, service_container
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


def migrate_script(docker_cli: str, container: str, migrate_command: list[str]) -> str:
    """§7.2: run the migrations inside a running API container (it has the full environment,
    so no secret passes through a command line)."""
    return f"set -euo pipefail\n{docker_cli} exec {container} {shlex.join(migrate_command)}"


class Api(pulumi.ComponentResource):
    replicas: list[docker.Container]
    upstreams: list[str]
    port: int
    migrations: pulumi.Resource | None

    def __init__(
        self,
        name: str,
        *,
        site: DockerSite,
        image: pulumi.Input[str],
        secrets: pulumi.Output[ApiSecrets],
        shell: HostShell,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("ai-meeting:api:Api", name, None, opts)
        cfg = site.cfg
        envs = pulumi.Output.secret(secrets.apply(lambda s: [f"{k}={v}" for k, v in api_environment(cfg, s).items()]))
        health_url = f"http://127.0.0.1:{cfg.api.port}{cfg.api.health_path}"
        self.replicas = []
        for i in range(1, cfg.api.replicas + 1):
            self.replicas.append(
                service_container(
                    replica_alias(i),
                    ServiceSpec(
                        service="api",
                        image=image,
                        limits=cfg.resources.api,
                        envs=envs,
                        aliases=[replica_alias(i)],
                        # Host-side app logs (plan: ./logs/app) only where the plan's layout exists.
                        volumes=(
                            [docker.ContainerVolumeArgs(host_path=f"{cfg.install_dir}/logs/app", container_path="/app/logs")]
                            if cfg.is_remote
                            else []
                        ),
                        health=Health(
                            test=["CMD-SHELL", f"curl -fsS {health_url} >/dev/null || wget -qO /dev/null {health_url}"],
                            interval="2s",
                            timeout="5s",
                            retries=15,  # 30 s of failures, as 3 x 10 s did
                            start_period="40s",
                        ),
                        extra_labels={"ai-meeting.replica": str(i)},
                        wait_timeout=cfg.api.start_timeout,
                    ),
                    site,
                    parent=self,
                    depends_on=depends_on,  # starts only after db/redis/minio are healthy (R10)
                )
            )
        self.upstreams = [f"{replica_alias(i)}:{cfg.api.port}" for i in range(1, cfg.api.replicas + 1)]
        self.port = cfg.api.port
        self.migrations = None
        if cfg.api.run_migrations:
            first = self.replicas[0]
            self.migrations = shell.run(
                "api-migrations",
                first.name.apply(lambda n: migrate_script(shell.docker_cli, n, cfg.api.migrate_command)),
                parent=self,
                # Re-run when the image (new release) or the command changes.
                triggers=[first.image, " ".join(cfg.api.migrate_command)],
                depends_on=[first],
            )
        self.register_outputs({"replicas": [c.name for c in self.replicas], "upstreams": self.upstreams})
