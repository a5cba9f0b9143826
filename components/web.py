"""The web front end (R11): one container behind nginx, reached as `web` on the network."""

from __future__ import annotations

import pulumi
import pulumi_docker as docker

from config.model import StackConfig

from .service import Health, ServiceSpec, service_container


class Web(pulumi.ComponentResource):
    container: docker.Container
    upstream: str

    def __init__(
        self,
        name: str,
        *,
        cfg: StackConfig,
        provider: docker.Provider,
        network_name: pulumi.Input[str],
        image: pulumi.Input[str],
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("ai-meeting:web:Web", name, None, opts)
        url = f"http://127.0.0.1:{cfg.web.port}/"
        self.container = service_container(
            "web",
            ServiceSpec(
                service="web",
                image=image,
                limits=cfg.resources.web,
                container_name=cfg.container_name("web"),
                delete_before_replace=True,
                envs=[f"TZ={cfg.timezone}"],
                health=Health(test=["CMD-SHELL", f"curl -fsS {url} >/dev/null || wget -qO /dev/null {url}"]),
            ),
            cfg=cfg,
            network_name=network_name,
            provider=provider,
            parent=self,
            depends_on=depends_on,
        )
        self.upstream = f"web:{cfg.web.port}"
        self.register_outputs({"container": self.container.name, "upstream": self.upstream})
