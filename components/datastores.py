"""PostgreSQL (R7, R19), Redis (R8, R19) and MinIO (R9) on one server: the stateful services.

Their definitions are in components/catalogue.py (shared with the Swarm); here each becomes
one container with a fixed name (backups and operators address it by name), its data on a
volume that outlives it, and the steps that keep it right: the database password kept equal
to the generated one, the bucket created.
"""

from __future__ import annotations

import pulumi
import pulumi_docker as docker

from . import catalogue, on_server
from .on_server import ServerSite
from .target import HostShell


class Postgres(pulumi.ComponentResource):
    container: docker.Container
    password_synced: pulumi.Resource

    def __init__(self, name: str, args: catalogue.PostgresArgs, site: ServerSite, shell: HostShell,
                 rotation: int, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ai-meeting:postgres:Postgres", name, None, opts)
        (self.container,) = on_server.containers(catalogue.postgres(args), site, parent=self)
        # Keeps the role's password equal to the generated one: after a rotation, and after
        # anything that regenerated it (pulumi-random #258).
        script, inner = catalogue.exec_in_service(shell.docker_cli, f"{site.name_prefix}-postgres", catalogue.PASSWORD_SYNC_SH)
        self.password_synced = shell.run(
            "postgres-password-sync", script, stdin=inner, parent=self,
            triggers=[self.container.id, str(rotation)], depends_on=[self.container],
        )
        self.register_outputs({"container": self.container.name, "endpoint": f"postgres:{catalogue.POSTGRES_PORT}"})


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
