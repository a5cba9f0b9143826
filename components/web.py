"""The web front end (R11): one container behind nginx, reached as `web` on the network.

Auto-named like the API replicas: a new release starts before the old container goes, and
nginx's upstream (by container name) is switched over with a reload in between."""

from __future__ import annotations

import pulumi
import pulumi_docker as docker

from .service import DockerSite, Health, ServiceSpec, service_container


class Web(pulumi.ComponentResource):
    container: docker.Container
    upstream: str
    port: int

    def __init__(
        self,
        name: str,
        *,
        site: DockerSite,
        image: pulumi.Input[str],
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("ai-meeting:web:Web", name, None, opts)
        cfg = site.cfg
        url = f"http://127.0.0.1:{cfg.web.port}/"
        self.container = service_container(
            "web",
            ServiceSpec(
                service="web",
                image=image,
                limits=cfg.resources.web,
                envs=[f"TZ={cfg.timezone}"],
                health=Health(test=["CMD-SHELL", f"curl -fsS {url} >/dev/null || wget -qO /dev/null {url}"]),
            ),
            site,
            parent=self,
            depends_on=depends_on,
        )
        self.upstream = f"web:{cfg.web.port}"
        self.port = cfg.web.port
        self.register_outputs({"container": self.container.name, "upstream": self.upstream})
