"""One pinned image per service, resolved on the target's engine.

Containers take the image *id*, not the tag, so a re-run with the same image is a no-op
and a new release (a new tag) replaces exactly the containers that use it (pulumi-docker
#325). `keep_locally` leaves images on the host at destroy: they may be shared or local builds.
"""

from __future__ import annotations

import shlex
import subprocess

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from config.model import Images as ImagesConfig
from config.model import SshTarget

from .target import ssh_options

SERVICES = ("postgres", "redis", "minio", "nginx", "api", "web")
MONITORING = ("prometheus", "node_exporter", "blackbox_exporter")


class Images(pulumi.ComponentResource):
    ids: dict[str, pulumi.Output[str]]

    def __init__(
        self,
        name: str,
        refs: dict[str, str],  # service -> pinned image reference (config images.*)
        images: ImagesConfig,
        provider: docker.Provider,
        after: list[pulumi.Resource],
        ssh_target: SshTarget | None = None,  # images.upload: copy them to this server first
        opts: pulumi.ResourceOptions | None = None,
        server_id: str = "",  # the server's machine id: a new server gets the images again
    ):
        super().__init__("ai-meeting:images:Images", name, None, opts)
        self.ids = {}
        for service, ref in refs.items():
            uploaded = [upload_image(service, ref, ssh_target, self, after, server_id)] if images.upload and ssh_target else []
            image = docker.RemoteImage(
                f"{service}-image",
                name=ref,
                keep_locally=True,
                # pull=False: the image must already be on the target (air-gapped, local builds);
                # the engine then finds it locally and never contacts a registry.
                pull_triggers=[ref] if images.pull else None,
                opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=uploaded),
            )
            self.ids[service] = image.image_id
        self.register_outputs({"refs": refs})


def local_image_id(ref: str) -> str:
    proc = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", ref], capture_output=True, text=True)
    if proc.returncode != 0:
        raise pulumi.RunError(f"images.upload: {ref} is not on this machine's Docker engine (build or pull it first)")
    return proc.stdout.strip()


def upload_image(
    service: str, ref: str, target: SshTarget, parent: pulumi.Resource, after: list[pulumi.Resource], server_id: str = ""
) -> command.local.Command:
    """`docker save | ssh docker load` with the deploy key; re-runs when the local image changes."""
    ssh = shlex.join(["ssh", *ssh_options(target, pulumi.get_stack()), "-p", str(target.port), f"{target.user}@{target.host}"])
    return command.local.Command(
        f"{service}-image-upload",
        create=f"set -euo pipefail\ndocker save {shlex.quote(ref)} | {ssh} sudo -n docker load",
        interpreter=["/bin/bash", "-c"],
        triggers=[local_image_id(ref), ref, *([server_id] if server_id else [])],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=after),
    )
