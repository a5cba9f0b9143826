"""The web front end (R11) on one server: behind nginx, reached as `web` on the network.

Auto-named like the API replicas: a new release starts before the old container goes, and
nginx's upstream (by container name) is switched over with a reload in between."""

from __future__ import annotations

import pulumi
import pulumi_docker as docker

from . import catalogue, on_server
from .on_server import ServerSite


class Web(pulumi.ComponentResource):
    containers: list[docker.Container]
    upstream: str
    port: int

    def __init__(self, name: str, *, args: catalogue.WebArgs, site: ServerSite,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("ai-meeting:web:Web", name, None, opts)
        self.containers = on_server.containers(catalogue.web(args), site, parent=self)
        self.upstream = f"web:{args.port}"
        self.port = args.port
        self.register_outputs({"containers": [c.name for c in self.containers], "upstream": self.upstream})
