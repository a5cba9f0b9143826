"""The stack's bridge network and its persistent data (R6)."""

from __future__ import annotations

import pulumi
import pulumi_docker as docker

DATA_SERVICES = ("postgres", "redis", "minio")


class NetworkAndData(pulumi.ComponentResource):
    network_name: pulumi.Output[str]
    volumes: dict[str, docker.Volume]

    def __init__(
        self,
        name: str,
        *,
        name_prefix: str,
        data_dir: str | None,  # servers: the plan's <install_dir>/data/<service>; None: plain volumes
        protect: bool,
        provider: docker.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("ai-meeting:network:NetworkAndData", name, None, opts)
        network = docker.Network(
            "network",
            name=f"{name_prefix}-network",
            driver="bridge",
            labels=[docker.NetworkLabelArgs(label="ai-meeting.stack", value=pulumi.get_stack())],
            opts=pulumi.ResourceOptions(parent=self, provider=provider),
        )
        self.network_name = network.name
        self.volumes = {}
        for service in DATA_SERVICES:
            # On a server the data lives where the plan puts it (/opt/ai-meeting/data/<svc>),
            # so operators can find it; locally a plain named volume is enough.
            driver_opts = (
                {"type": "none", "o": "bind", "device": f"{data_dir}/{service}"}
                if data_dir
                else None
            )
            self.volumes[service] = docker.Volume(
                f"{service}-data",
                name=f"{name_prefix}-{service}-data",
                driver="local",
                driver_opts=driver_opts,
                labels=[
                    docker.VolumeLabelArgs(label="ai-meeting.data", value="true"),
                    docker.VolumeLabelArgs(label="ai-meeting.service", value=service),
                ],
                opts=pulumi.ResourceOptions(
                    parent=self,
                    provider=provider,
                    # Data must outlive any `up` or `destroy`: in prod it is protected, and kept
                    # on the server even if removed from the program.
                    protect=protect,
                    retain_on_delete=protect,
                ),
            )
        self.register_outputs(
            {"network_name": self.network_name, "volumes": {k: v.name for k, v in self.volumes.items()}}
        )
