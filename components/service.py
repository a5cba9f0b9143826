"""What every long-running container of the stack has, in one place.

Restart policy, health-gated creation, CPU/memory limits, rotated logs, labels and the
stack network are applied here, so no component can forget one (the policy pack checks
the same invariants on the resulting resources).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import pulumi
import pulumi_docker as docker

from config.model import Limits, StackConfig, docker_cpus

LABEL_SERVICE = "ai-meeting.service"
LABEL_KIND = "ai-meeting.kind"
LABEL_STACK = "ai-meeting.stack"
LABEL_CONTENT = "ai-meeting.content-sha256"


@dataclass(frozen=True)
class DockerSite:
    """Where the stack's containers go: one engine (explicit provider) and one network."""

    cfg: StackConfig
    provider: docker.Provider
    network_name: pulumi.Input[str]


@dataclass(frozen=True)
class Health:
    """A Docker healthcheck. `start_period` is grace before failures count."""

    test: Sequence[str]
    # Docker 20.10 has no start_interval: the first check runs one interval after the start,
    # so the interval is how long every health-gated step waits at least.
    interval: str = "2s"
    timeout: str = "5s"
    retries: int = 25  # 50 s of failures before unhealthy, as 5 x 10 s did
    start_period: str = "10s"

    def args(self) -> docker.ContainerHealthcheckArgs:
        return docker.ContainerHealthcheckArgs(
            tests=list(self.test),
            interval=self.interval,
            timeout=self.timeout,
            retries=self.retries,
            start_period=self.start_period,
        )


@dataclass
class ServiceSpec:
    service: str  # postgres, redis, minio, api, web, nginx, prometheus, grafana
    image: pulumi.Input[str]
    limits: Limits
    health: Health
    container_name: str | None = None  # None: auto-named, so a replacement starts before the old one stops
    envs: pulumi.Input[Sequence[pulumi.Input[str]]] | None = None
    command: Sequence[pulumi.Input[str]] | None = None
    aliases: Sequence[str] = ()
    volumes: Sequence[docker.ContainerVolumeArgs] = ()
    uploads: Sequence[docker.ContainerUploadArgs] = ()
    ports: Sequence[docker.ContainerPortArgs] = ()
    extra_labels: dict[str, pulumi.Input[str]] = field(default_factory=dict)
    wait_timeout: int = 120
    user: str | None = None
    # Fixed names and published ports can't exist twice: replace by delete-then-create.
    delete_before_replace: bool = False


def labels_for(cfg: StackConfig, service: str, kind: str, extra: dict[str, pulumi.Input[str]]) -> list[docker.ContainerLabelArgs]:
    values: dict[str, pulumi.Input[str]] = {
        LABEL_SERVICE: service,
        LABEL_KIND: kind,
        LABEL_STACK: pulumi.get_stack(),
        **extra,
    }
    return [docker.ContainerLabelArgs(label=k, value=v) for k, v in sorted(values.items())]


def service_container(
    resource_name: str,
    spec: ServiceSpec,
    site: DockerSite,
    *,
    parent: pulumi.Resource,
    depends_on: Sequence[pulumi.Resource] = (),
) -> docker.Container:
    return docker.Container(
        resource_name,
        name=spec.container_name,
        image=spec.image,
        envs=spec.envs,
        command=list(spec.command) if spec.command is not None else None,
        user=spec.user,
        restart="unless-stopped",
        # Created only once healthy (pulumi-docker #602): a broken release fails `up`.
        wait=True,
        wait_timeout=spec.wait_timeout,
        healthcheck=spec.health.args(),
        cpus=docker_cpus(spec.limits.cpus),  # as the provider reads it back, or every up replaces
        memory=spec.limits.memory_mb,
        memory_swap=spec.limits.memory_mb,  # no swap on top: the limit is the limit
        log_driver="json-file",
        log_opts={"max-size": "20m", "max-file": "5"},
        labels=labels_for(site.cfg, spec.service, "service", spec.extra_labels),
        networks_advanced=[
            docker.ContainerNetworksAdvancedArgs(name=site.network_name, aliases=[spec.service, *spec.aliases])
        ],
        volumes=list(spec.volumes),
        uploads=list(spec.uploads),
        ports=list(spec.ports),
        destroy_grace_seconds=30,  # time for a clean shutdown (Postgres checkpoint, Redis AOF fsync)
        opts=pulumi.ResourceOptions(
            parent=parent,
            provider=site.provider,
            depends_on=list(depends_on),
            delete_before_replace=spec.delete_before_replace,
        ),
    )


def loopback_port(internal: int, external: int | None = None) -> docker.ContainerPortArgs:
    """Only nginx listens beyond 127.0.0.1; operators reach the rest through SSH tunnels."""
    return docker.ContainerPortArgs(internal=internal, external=external or internal, ip="127.0.0.1")


def upload(path: str, content: pulumi.Input[str], mode: int = 0o644) -> docker.ContainerUploadArgs:
    """A file put into the container at creation; a content change replaces the container."""
    return docker.ContainerUploadArgs(file=path, content=content, permissions=f"0{mode:o}")
