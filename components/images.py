"""One pinned image per service, resolved on the target's engine.

Containers take the image *id*, not the tag, so a re-run with the same image is a no-op
and a new release (a new tag) replaces exactly the containers that use it (pulumi-docker
#325). `keep_locally` leaves images on the host at destroy: they may be shared or local builds.
"""

from __future__ import annotations

import pulumi
import pulumi_docker as docker

from config.model import StackConfig

SERVICES = ("postgres", "redis", "minio", "nginx", "api", "web")
MONITORING = ("prometheus", "grafana")


class Images(pulumi.ComponentResource):
    ids: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, cfg: StackConfig, provider: docker.Provider, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ai-meeting:images:Images", name, None, opts)
        wanted = SERVICES + (MONITORING if cfg.monitoring.enabled else ())
        self.ids = {}
        for service in wanted:
            ref = getattr(cfg.images, service)
            image = docker.RemoteImage(
                f"{service}-image",
                name=ref,
                keep_locally=True,
                # pull=False: the image must already be on the target (air-gapped, local builds);
                # the engine then finds it locally and never contacts a registry.
                pull_triggers=[ref] if cfg.images.pull else None,
                opts=pulumi.ResourceOptions(parent=self, provider=provider),
            )
            self.ids[service] = image.image_id
        self.register_outputs({"refs": {s: getattr(cfg.images, s) for s in wanted}})
