"""The one-server backend: a ServiceDefinition as `docker.Container`s on one engine.

What only one server has: containers created healthy-first (`wait`), restart unless-stopped,
network aliases, files uploaded at creation, secrets in the environment (the engine's state is
root-only on the host), ports on 127.0.0.1, and fixed names for the services that must exist
once (data, edge, ops) while app replicas are auto-named so a new one starts before the old
one goes. The policy pack checks the same invariants on the resulting resources.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import pulumi
import pulumi_docker as docker

from config.model import docker_cpus

from .definition import (LABEL_KIND, LABEL_NAME, LABEL_SERVICE, LABEL_STACK, LOG_DRIVER, LOG_OPTS, LOW_PORTS_SYSCTL, Probe,
                         ServiceDefinition, gives_up_after)

# In-memory scratch: small, and counted in the container's memory limit.
TMPFS_OPTIONS = "rw,nosuid,nodev,size=64m"


@dataclass(frozen=True)
class ServerSite:
    """Where the containers go: one engine (explicit provider), one network, the data volumes."""

    provider: docker.Provider
    network_name: pulumi.Input[str]
    name_prefix: str
    volumes: Mapping[str, pulumi.Input[str]]  # DataVolume.name -> the volume resource's name
    bind_address: str = "0.0.0.0"  # where public ports listen
    # (container id, pids limit) of every container made here: the provider has no pids
    # limit input, so the stack applies them afterwards (components/stack.py, PidsLimits).
    pids_limits: list[tuple[pulumi.Output[str], int]] = field(default_factory=list)


def healthcheck(p: Probe) -> docker.ContainerHealthcheckArgs:
    return docker.ContainerHealthcheckArgs(
        tests=list(p.test), interval=p.interval, timeout=p.timeout, retries=p.retries, start_period=p.start_period
    )


def container_env(d: ServiceDefinition) -> pulumi.Output[list[str]]:
    """Plain settings, then the secret ones (the whole list is then a secret in state)."""
    plain = [f"{k}={v}" for k, v in d.env.items()]
    secret_parts: list[pulumi.Output[Mapping[str, str]]] = [
        pulumi.Output.secret(s.value).apply(lambda v, k=s.env: {k: v}) for s in d.file_secrets
    ]
    if d.secret_env is not None:
        secret_parts.append(d.secret_env)
    if not secret_parts:
        return pulumi.Output.from_input(plain)
    return pulumi.Output.secret(
        pulumi.Output.all(*secret_parts).apply(lambda parts: plain + [f"{k}={v}" for part in parts for k, v in part.items()])
    )


def _top_most(dirs: set[str]) -> list[str]:
    return sorted(x for x in dirs if not any(x.startswith(y.rstrip("/") + "/") for y in dirs if y != x))


def _under(path: str, dirs: Sequence[str]) -> bool:
    return any(path.startswith(d.rstrip("/") + "/") for d in dirs)


def files_carrier(d: ServiceDefinition, site: ServerSite, uploads: list[docker.ContainerUploadArgs], *,
                  parent: pulumi.Resource, depends_on: Sequence[pulumi.Resource]) -> docker.Container:
    """The files of a service whose root filesystem is read-only. Docker refuses any upload
    into a read-only container (the provider extracts at `/`), so they go into a container that
    is created and never started, into anonymous volumes over their directories (each starts as
    a copy of the image's directory: nginx's mime.types stays beside nginx.conf); the service
    mounts those volumes read-only. Auto-named and replaced when a file changes, so the
    service is replaced with it. Mount points of the service's own volumes inside those
    directories are made here too (a read-only volume cannot get a new directory)."""
    dirs = _top_most({posixpath.dirname(f.path) for f in d.files})
    nested = [m for m in [v.path for v in d.volumes] + [h.path for h in d.host_dirs] if _under(m, dirs)]
    uploads = uploads + [docker.ContainerUploadArgs(file=f"{m}/.mountpoint", content="a mount point\n") for m in nested]
    return docker.Container(
        f"{d.service}-files",
        image=d.image,
        start=False,
        must_run=False,
        network_mode="none",
        volumes=[docker.ContainerVolumeArgs(container_path=path) for path in dirs],
        uploads=uploads,
        log_driver=LOG_DRIVER,
        log_opts=LOG_OPTS,
        labels=[docker.ContainerLabelArgs(label=LABEL_STACK, value=pulumi.get_stack()),
                docker.ContainerLabelArgs(label=LABEL_KIND, value="files")],
        opts=pulumi.ResourceOptions(parent=parent, provider=site.provider, depends_on=list(depends_on)),
    )


def fixed_name(d: ServiceDefinition, prefix: str) -> str:
    return f"{prefix}-{d.service}"


def containers(
    d: ServiceDefinition,
    site: ServerSite,
    *,
    parent: pulumi.Resource,
    depends_on: Sequence[pulumi.Resource] = (),
    resource_name: str | None = None,
) -> list[docker.Container]:
    """One container per replica. App replicas are `<svc>-<i>` in Pulumi, auto-named in Docker,
    and answer on the aliases `<svc>` and `<svc>-<i>`; the others have the fixed name
    `<prefix>-<svc>` and are replaced delete-first (a name or a host port can't exist twice)."""
    name = fixed_name(d, site.name_prefix)
    single = d.role != "app"
    env = container_env(d)
    uploads = [
        docker.ContainerUploadArgs(file=f.path, content=pulumi.Output.secret(f.content) if f.secret else f.content,
                                   permissions=f"0{f.mode:o}")
        for f in d.files
    ]
    volumes = [docker.ContainerVolumeArgs(volume_name=site.volumes[v.name], container_path=v.path, read_only=v.read_only or None)
               for v in d.volumes]
    volumes += [docker.ContainerVolumeArgs(host_path=h.host_path, container_path=h.path, read_only=h.read_only or None)
                for h in d.host_dirs]
    p = d.privileges
    if p.read_only_root:
        # Disk-backed scratch: anonymous volumes that go with the container.
        volumes += [docker.ContainerVolumeArgs(container_path=path) for path in p.spool]
        if uploads:
            carrier = files_carrier(d, site, uploads, parent=parent, depends_on=depends_on)
            volumes.append(docker.ContainerVolumeArgs(from_container=carrier.id.apply(lambda i: f"{i}:ro")))
            uploads = []
    ports = [docker.ContainerPortArgs(internal=i, external=e, ip=site.bind_address) for i, e in d.public_ports]
    ports += [docker.ContainerPortArgs(internal=i, external=e, ip="127.0.0.1") for i, e in d.loopback_ports]
    result = []
    for i in range(1, (1 if single else d.replicas) + 1):
        alias = d.service if single else f"{d.service}-{i}"
        labels: dict[str, pulumi.Input[str]] = {
            LABEL_SERVICE: d.service, LABEL_KIND: "service", LABEL_STACK: pulumi.get_stack(), LABEL_NAME: name, **d.labels,
        }
        if not single:
            labels["ai-meeting.replica"] = str(i)
        result.append(
            docker.Container(
                resource_name or alias,
                name=name if single else None,
                image=d.image,
                envs=env,
                command=list(d.command) if d.command is not None else None,
                user=d.user,
                # Least privilege (README: Hardening); the pids limit comes after creation.
                security_opts=["no-new-privileges:true"],
                capabilities=docker.ContainerCapabilitiesArgs(drops=["ALL"], adds=list(p.cap_add) or None),
                read_only=p.read_only_root,
                tmpfs={path: TMPFS_OPTIONS for path in p.tmpfs} if p.read_only_root and p.tmpfs else None,
                sysctls=LOW_PORTS_SYSCTL if p.low_ports else None,
                restart="unless-stopped",
                # Created only once healthy (pulumi-docker #602): a broken release fails `up`.
                wait=True,
                wait_timeout=min(d.start_timeout, gives_up_after(d.probe)) if d.fail_when_unhealthy else d.start_timeout,
                healthcheck=healthcheck(d.probe),
                cpus=docker_cpus(d.limits.cpus),  # as the provider reads it back, or every up replaces
                memory=d.limits.memory_mb,
                memory_swap=d.limits.memory_mb,  # no swap on top: the limit is the limit
                log_driver=LOG_DRIVER,
                log_opts=LOG_OPTS,
                labels=[docker.ContainerLabelArgs(label=k, value=v) for k, v in sorted(labels.items())],
                networks_advanced=[
                    docker.ContainerNetworksAdvancedArgs(
                        name=site.network_name, aliases=[d.service] if single else [d.service, alias]
                    )
                ],
                volumes=volumes,
                uploads=uploads,
                ports=ports,
                destroy_grace_seconds=30,  # a clean shutdown (Postgres checkpoint, Redis AOF fsync)
                opts=pulumi.ResourceOptions(
                    parent=parent, provider=site.provider, depends_on=list(depends_on), delete_before_replace=single
                ),
            )
        )
        if p.pids_limit is not None:
            site.pids_limits.append((result[-1].id, p.pids_limit))
    return result


def pids_limits_script(docker_cli: str, limits: Sequence[tuple[str, int]]) -> str:
    """`docker update --pids-limit` for each (container id, limit). pulumi-docker's Container
    has no pids limit input; the engine keeps the limit across restarts, and a replaced
    container (new id) gets it again from the next run of this script."""
    lines = ["set -euo pipefail"]
    lines += [f"{docker_cli} update --pids-limit {limit} {cid} >/dev/null" for cid, limit in limits]
    lines.append(f"echo 'pids limits set on {len(limits)} containers'")
    return "\n".join(lines)
