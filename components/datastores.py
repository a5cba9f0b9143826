"""PostgreSQL (R7, R19), Redis (R8, R19) and MinIO (R9) on one server: the stateful services.

Their definitions are in components/catalogue.py (shared with the Swarm); here each becomes
one container with a fixed name (backups and operators address it by name), its data on a
volume that outlives it, and the steps that keep it right: the database password kept equal
to the generated one, the bucket created.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Literal

import pulumi
import pulumi_docker as docker

from render.postgres_upgrade import UpgradeSettings, render_upgrade_script

from . import catalogue, on_server
from .on_server import ServerSite
from .target import HostShell


@dataclass(frozen=True)
class MajorUpgrade:
    """What the upgrade script needs besides the service (render/postgres_upgrade.py)."""

    mode: Literal["refuse", "dump-restore"]
    app_label: str  # key=value of the API replicas
    proxy_container: str


class Postgres(pulumi.ComponentResource):
    container: docker.Container
    password_synced: pulumi.Resource
    ready: pulumi.Resource  # the data is in place: after a major upgrade, restored and verified

    def __init__(self, name: str, args: catalogue.PostgresArgs, site: ServerSite, shell: HostShell,
                 rotation: int, upgrade: MajorUpgrade, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ai-meeting:postgres:Postgres", name, None, opts)
        definition = catalogue.postgres(args)
        (volume,) = [site.volumes[v.name] for v in definition.volumes]
        upgrade_script = pulumi.Output.all(args.image, volume).apply(lambda v: render_upgrade_script(UpgradeSettings(
            mode=upgrade.mode, container=f"{site.name_prefix}-postgres", volume=v[1], image=v[0],
            db_name=args.database.name, db_user=args.database.user, app_label=upgrade.app_label,
            proxy_container=upgrade.proxy_container, docker_cli=shell.docker_cli,
            pgdata_subdir=catalogue.PGDATA_SUBDIR)))
        # Runs whenever the image changes, before the container is replaced: nothing unless
        # the data directory is of another major version (then refused, or dumped and moved
        # aside with database.upgrade: dump-restore).
        prepare = shell.run("postgres-upgrade-prepare", upgrade_script.apply(lambda t: _phase(t, "prepare")), parent=self,
                            triggers=[args.image, upgrade.mode])
        (self.container,) = on_server.containers(definition, site, parent=self, depends_on=[prepare])
        # Keeps the role's password equal to the generated one: after a rotation, and after
        # anything that regenerated it (pulumi-random #258).
        script, inner = catalogue.exec_in_service(shell.docker_cli, f"{site.name_prefix}-postgres", catalogue.PASSWORD_SYNC_SH)
        self.password_synced = shell.run(
            "postgres-password-sync", script, stdin=inner, parent=self,
            triggers=[self.container.id, str(rotation)], depends_on=[self.container],
        )
        self.ready = shell.run("postgres-upgrade-finish", upgrade_script.apply(lambda t: _phase(t, "finish")), parent=self,
                               triggers=[self.container.id, upgrade.mode], depends_on=[self.password_synced])
        self.register_outputs({"container": self.container.name, "endpoint": f"postgres:{catalogue.POSTGRES_PORT}"})


def _phase(script: str, phase: str) -> str:
    return f"bash -c {shlex.quote(script)} postgres-upgrade {phase}"


class Redis(pulumi.ComponentResource):
    container: docker.Container

    def __init__(self, name: str, args: catalogue.RedisArgs, site: ServerSite, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ai-meeting:redis:Redis", name, None, opts)
        (self.container,) = on_server.containers(catalogue.redis(args), site, parent=self)
        self.register_outputs({"container": self.container.name, "endpoint": f"redis:{catalogue.REDIS_PORT}"})


class Minio(pulumi.ComponentResource):
    container: docker.Container
    bucket_ready: pulumi.Resource

    def __init__(self, name: str, args: catalogue.MinioArgs, site: ServerSite, shell: HostShell,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("ai-meeting:minio:Minio", name, None, opts)
        (self.container,) = on_server.containers(catalogue.minio(args), site, parent=self)
        script, inner = catalogue.exec_in_service(shell.docker_cli, f"{site.name_prefix}-minio", catalogue.bucket_sh(args.minio.bucket))
        self.bucket_ready = shell.run(
            "minio-bucket", script, stdin=inner, parent=self,
            triggers=[self.container.id, args.minio.bucket], depends_on=[self.container],
        )
        self.register_outputs({"container": self.container.name, "endpoint": f"minio:{catalogue.MINIO_PORT}",
                               "bucket": args.minio.bucket})
