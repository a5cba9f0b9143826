"""PostgreSQL (R7, R19), Redis (R8, R19) and MinIO (R9): the stateful services.

Each has a fixed container name (backups and operators address them by name), its data
on a volume that outlives the container, a healthcheck gating creation, and its port on
127.0.0.1 only.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from config.model import StackConfig
from render.postgres import render_init_sql, render_postgres_args
from render.redis import RedisSettings, render_redis_command

from .service import DockerSite, Health, ServiceSpec, loopback_port, service_container, upload
from .target import HostShell

POSTGRES_PORT = 5432
REDIS_PORT = 6379
MINIO_PORT = 9000
MINIO_CONSOLE_PORT = 9001


@dataclass
class Placement:
    """A data service's engine and network, image, and the volume its data lives on."""

    site: DockerSite
    image: pulumi.Input[str]
    volume: docker.Volume

    @property
    def cfg(self) -> StackConfig:
        return self.site.cfg


def _published(host_port: int | None, internal: int) -> list[docker.ContainerPortArgs]:
    return [] if host_port is None else [loopback_port(internal, host_port)]


def postgres_command(cfg: StackConfig) -> list[str]:
    """Server settings on the command line (works with the official image's entrypoint):
    pg_stat_statements for slow-query analysis (§10, R19) and slow statements logged."""
    return render_postgres_args(
        {"log_min_duration_statement": "1000", "timezone": cfg.timezone, "log_timezone": cfg.timezone}
    )


# Run by `sh` inside the postgres container. The password comes from the container's own
# environment (POSTGRES_PASSWORD, the generated secret), is quoted by the shell's builtins and
# reaches psql on stdin: it is on no command line, in no script text and not in Pulumi's state
# as a command input, so a saved plan made before the password exists still applies.
PASSWORD_SYNC_SH = r"""set -eu
q="'"
quoted=$(printf '%s' "$POSTGRES_PASSWORD" | sed "s/$q/$q$q/g")
printf 'ALTER ROLE "%s" WITH PASSWORD %s%s%s;\n' "$POSTGRES_USER" "$q" "$quoted" "$q" |
  psql -v ON_ERROR_STOP=1 -q -U "$POSTGRES_USER" -d "$POSTGRES_DB"
"""


class Postgres(pulumi.ComponentResource):
    container: docker.Container
    password_synced: pulumi.Resource
    host: str
    port: int

    def __init__(
        self,
        name: str,
        where: Placement,
        password: pulumi.Output[str],
        shell: HostShell,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("ai-meeting:postgres:Postgres", name, None, opts)
        cfg = where.cfg
        db = cfg.database
        envs = pulumi.Output.secret(password).apply(
            lambda pw: [
                f"POSTGRES_DB={db.name}",
                f"POSTGRES_USER={db.user}",
                f"POSTGRES_PASSWORD={pw}",
                "PGDATA=/var/lib/postgresql/data/pgdata",
                f"TZ={cfg.timezone}",
            ]
        )
        self.container = service_container(
            "postgres",
            ServiceSpec(
                service="postgres",
                image=where.image,
                limits=cfg.resources.postgres,
                container_name=cfg.container_name("postgres"),
                delete_before_replace=True,
                envs=envs,
                command=postgres_command(cfg),
                volumes=[docker.ContainerVolumeArgs(volume_name=where.volume.name, container_path="/var/lib/postgresql/data")],
                uploads=[upload("/docker-entrypoint-initdb.d/00-init.sql", render_init_sql(db.name, cfg.timezone))],
                ports=_published(cfg.loopback_ports.postgres, POSTGRES_PORT),
                health=Health(test=["CMD-SHELL", f"pg_isready -U {db.user} -d {db.name} -h 127.0.0.1"], start_period="30s"),
                wait_timeout=300,  # first start runs initdb and the init SQL
            ),
            where.site,
            parent=self,
        )
        # Keeps the role's password equal to the generated one: after a rotation, and after
        # anything that regenerated it (pulumi-random #258). Runs over the container's local
        # socket with the password the container was started with (PASSWORD_SYNC_SH).
        self.password_synced = shell.run(
            "postgres-password-sync",
            f"set -euo pipefail\n{shell.docker_cli} exec -i {cfg.container_name('postgres')} sh -s",
            stdin=PASSWORD_SYNC_SH,
            parent=self,
            triggers=[self.container.id, str(cfg.rotation.db_password)],
            depends_on=[self.container],
        )
        self.host, self.port = "postgres", POSTGRES_PORT
        self.register_outputs({"container": self.container.name, "endpoint": f"{self.host}:{self.port}"})


def redis_settings(cfg: StackConfig) -> RedisSettings:
    r = cfg.redis
    return RedisSettings(maxmemory=r.maxmemory, maxmemory_policy=r.maxmemory_policy, appendonly=r.appendonly)


class Redis(pulumi.ComponentResource):
    container: docker.Container
    host: str
    port: int

    def __init__(self, name: str, where: Placement, password: pulumi.Output[str], opts: pulumi.ResourceOptions | None = None):
        super().__init__("ai-meeting:redis:Redis", name, None, opts)
        cfg = where.cfg
        # The password reaches redis-server through the environment, not argv, so it is not
        # in `ps`; REDISCLI_AUTH lets redis-cli (healthcheck, backups) authenticate.
        envs = pulumi.Output.secret(password).apply(lambda pw: [f"REDIS_PASSWORD={pw}", f"REDISCLI_AUTH={pw}"])
        self.container = service_container(
            "redis",
            ServiceSpec(
                service="redis",
                image=where.image,
                limits=cfg.resources.redis,
                container_name=cfg.container_name("redis"),
                delete_before_replace=True,
                envs=envs,
                command=render_redis_command(redis_settings(cfg)),
                volumes=[docker.ContainerVolumeArgs(volume_name=where.volume.name, container_path="/data")],
                ports=_published(cfg.loopback_ports.redis, REDIS_PORT),
                # `PING` rather than the plan's `INCR ping`, which writes a key every 10 s.
                health=Health(test=["CMD-SHELL", "redis-cli ping | grep -q PONG"]),
            ),
            where.site,
            parent=self,
        )
        self.host, self.port = "redis", REDIS_PORT
        self.register_outputs({"container": self.container.name, "endpoint": f"{self.host}:{self.port}"})


def bucket_script(container: str, bucket: str, docker_cli: str) -> str:
    """Create the bucket with the `mc` inside the MinIO container; credentials come from the
    container's own environment, so they never appear on a command line or in state."""
    inner = (
        'mc alias set local http://127.0.0.1:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null'
        f" && mc mb --ignore-existing local/{bucket}"
    )
    return f"set -euo pipefail\n{docker_cli} exec {container} sh -c '{inner}'"


class Minio(pulumi.ComponentResource):
    container: docker.Container
    bucket_ready: pulumi.Resource
    endpoint: str

    def __init__(
        self,
        name: str,
        where: Placement,
        password: pulumi.Output[str],
        shell: HostShell,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("ai-meeting:minio:Minio", name, None, opts)
        cfg = where.cfg
        user = cfg.minio.root_user
        envs = pulumi.Output.secret(password).apply(
            lambda pw: [f"MINIO_ROOT_USER={user}", f"MINIO_ROOT_PASSWORD={pw}", f"TZ={cfg.timezone}"]
        )
        ports = _published(cfg.loopback_ports.minio, MINIO_PORT)
        if cfg.minio.console:
            ports += _published(cfg.loopback_ports.minio_console, MINIO_CONSOLE_PORT)
        command = ["server", "/data"] + (["--console-address", f":{MINIO_CONSOLE_PORT}"] if cfg.minio.console else [])
        self.container = service_container(
            "minio",
            ServiceSpec(
                service="minio",
                image=where.image,
                limits=cfg.resources.minio,
                container_name=cfg.container_name("minio"),
                delete_before_replace=True,
                envs=envs,
                command=command,
                volumes=[docker.ContainerVolumeArgs(volume_name=where.volume.name, container_path="/data")],
                ports=ports,
                # Newer official images ship no curl; `mc ready` is their own liveness probe.
                health=Health(
                    test=["CMD-SHELL", "curl -fsS http://127.0.0.1:9000/minio/health/live || mc ready local"],
                    interval="2s",
                    timeout="10s",
                ),
            ),
            where.site,
            parent=self,
        )
        self.bucket_ready = shell.run(
            "minio-bucket",
            bucket_script(cfg.container_name("minio"), cfg.minio.bucket, shell.docker_cli),
            parent=self,
            triggers=[self.container.id, cfg.minio.bucket],
            depends_on=[self.container],
        )
        self.endpoint = f"minio:{MINIO_PORT}"
        self.register_outputs({"container": self.container.name, "endpoint": self.endpoint, "bucket": cfg.minio.bucket})
