"""The API on one server (R5, R10, R14, R15, R20): N replicas, migrations in the first.

Replicas are auto-named and publish no host port, so a new image or setting starts new
containers (healthy first, `wait=True`) while the old ones still serve. nginx's upstream
lists the replicas by container name (components/proxy.py) and is reloaded before Pulumi
removes the old ones at the end of the update: no request is sent to a replica that is gone.
Each replica also answers on the network aliases `api` and `api-<i>`.
"""

from __future__ import annotations

import shlex

import pulumi
import pulumi_docker as docker

from . import catalogue, on_server
from .on_server import ServerSite
from .target import HostShell


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
        self.replicas = on_server.containers(
            catalogue.api(args), site, parent=self,
            depends_on=depends_on,  # starts only after db/redis/minio are healthy (R10)
        )
        self.migrations = None
        if api.run_migrations:
            # Inside the first replica once it is healthy: it has the whole environment, so no
            # secret is an input of this step (a secret input computed from passwords that a
            # saved plan does not know yet makes `apply-plan` refuse: the prod tier's plan test).
            first = self.replicas[0]
            self.migrations = shell.run(
                "api-migrations",
                first.name.apply(lambda n: f"set -euo pipefail\n{shell.docker_cli} exec {n} {shlex.join(api.migrate_command)}"),
                parent=self,
                # Re-run when the image (new release) or the command changes.
                triggers=[args.image, " ".join(api.migrate_command)],
                depends_on=[first],
            )
        self.upstreams = [f"{replica_alias(i)}:{api.port}" for i in range(1, api.replicas + 1)]
        self.port = api.port
        self.register_outputs({"replicas": [c.name for c in self.replicas], "upstreams": self.upstreams})
