"""The Swarm backend: a ServiceDefinition as one `docker.Service`.

What only a swarm has:
- endpoint mode dnsrr: a service's name resolves to its tasks' addresses on the overlay
  network. VIP mode and the ingress mesh need IPVS in the kernel, which many hosts (and this
  test machine) lack; nginx re-resolves names through Docker's DNS and publishes 80/443 in
  host mode, which works with or without IPVS;
- placement: data services pinned to the node labelled `ai-meeting.data=true` (their named
  volumes are created there by that node's engine, so a task never starts on an empty volume
  elsewhere), nginx one task per edge node, `every_node` services one task per node;
- updates: app services start the new task first, the others stop first; Swarm rolls back
  on its own when new tasks fail their healthchecks, and `up` waits until every task runs;
- secrets: a setting the image reads from `<VAR>_FILE` is a docker secret file; secret files
  are docker secrets, other files docker configs;
- least privilege: no-new-privileges is the nodes' daemon default (daemon.json; a Service has
  no such input), and there is no pids limit (README: Hardening).
"""

from __future__ import annotations

import base64
import posixpath
import re
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from config.model import DATA_LABEL, EDGE_LABEL

from .catalogue import SECRETS_DIR
from .definition import LABEL_KIND, LABEL_NAME, LABEL_SERVICE, LABEL_STACK, LOG_DRIVER, LOG_OPTS, LOW_PORTS_SYSCTL, Probe, ServiceDefinition


ON_DATA_NODE = f"node.labels.{DATA_LABEL}==true"
ON_EDGE_NODES = f"node.labels.{EDGE_LABEL}==true"


@dataclass(frozen=True)
class SwarmSite:
    """Where the services go: the swarm (provider at a manager) and the overlay network."""

    provider: docker.Provider
    network: pulumi.Input[str]
    name_prefix: str
    node_count: int
    edge_count: int


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _key(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


def healthcheck(p: Probe) -> docker.ServiceTaskSpecContainerSpecHealthcheckArgs:
    return docker.ServiceTaskSpecContainerSpecHealthcheckArgs(
        tests=list(p.test), interval=p.interval, timeout=p.timeout, retries=p.retries, start_period=p.start_period
    )


def _secret(name: str, site: SwarmSite, data: pulumi.Input[str], parent: pulumi.Resource) -> docker.Secret:
    # Auto-named: a secret cannot change in place, and a new value must exist beside the old
    # one until the service has moved to it (create before delete).
    return docker.Secret(
        name,
        data=pulumi.Output.secret(pulumi.Output.from_input(data).apply(b64)),
        labels=[docker.SecretLabelArgs(label=LABEL_STACK, value=pulumi.get_stack())],
        opts=pulumi.ResourceOptions(parent=parent, provider=site.provider),
    )


def _config(name: str, site: SwarmSite, text: pulumi.Input[str], parent: pulumi.Resource) -> docker.ServiceConfig:
    return docker.ServiceConfig(
        name, data=pulumi.Output.from_input(text).apply(b64), opts=pulumi.ResourceOptions(parent=parent, provider=site.provider)
    )


def service(
    d: ServiceDefinition,
    site: SwarmSite,
    *,
    parent: pulumi.Resource,
    depends_on: list[pulumi.Resource] | None = None,
) -> docker.Service:
    name = f"{site.name_prefix}-{d.service}"
    secrets: list[docker.ServiceTaskSpecContainerSpecSecretArgs] = []
    configs: list[docker.ServiceTaskSpecContainerSpecConfigArgs] = []
    env: dict[str, pulumi.Input[str]] = dict(d.env)
    for s in d.file_secrets:
        secret = _secret(f"{d.service}-{s.file_name.replace('_', '-')}", site, s.value, parent)
        secrets.append(docker.ServiceTaskSpecContainerSpecSecretArgs(
            secret_id=secret.id, secret_name=secret.name, file_name=s.file_name, file_mode=0o444, file_uid="0", file_gid="0"))
        env[f"{s.env}_FILE"] = posixpath.join(SECRETS_DIR, s.file_name)
    for f in d.files:
        if f.secret:
            secret = _secret(f"{d.service}-{_key(f.path)}", site, f.content, parent)
            secrets.append(docker.ServiceTaskSpecContainerSpecSecretArgs(
                secret_id=secret.id, secret_name=secret.name, file_name=f.path, file_mode=f.mode, file_uid="0", file_gid="0"))
        else:
            config = _config(f"{d.service}-{_key(f.path)}", site, f.content, parent)
            configs.append(docker.ServiceTaskSpecContainerSpecConfigArgs(
                config_id=config.id, config_name=config.name, file_name=f.path, file_mode=f.mode))
    all_env: pulumi.Input[dict[str, str]] = env  # type: ignore[assignment]
    if d.secret_env is not None:
        all_env = pulumi.Output.secret(pulumi.Output.all(env, d.secret_env).apply(lambda v: {**v[0], **v[1]}))
    # Named volumes on the node the task runs on (the data node): created by that engine on
    # first start, never removed by Pulumi (destroy leaves the data; README: Docker Swarm).
    mounts = [docker.ServiceTaskSpecContainerSpecMountArgs(type="volume", source=f"{site.name_prefix}-{v.name}-data", target=v.path)
              for v in d.volumes]
    mounts += [docker.ServiceTaskSpecContainerSpecMountArgs(type="bind", source=h.host_path, target=h.path, read_only=h.read_only or None)
               for h in d.host_dirs]
    p = d.privileges
    if p.read_only_root:
        # Files are configs and secrets here (mounted, never written): only the scratch
        # directories need a place; spool on disk as an anonymous volume of the task.
        # No size option: pulumi-docker 4.11 panics on tmpfs_options.size_bytes ("interface {} is
        # int, not int64"). What a task writes there still counts in its memory limit.
        mounts += [docker.ServiceTaskSpecContainerSpecMountArgs(type="tmpfs", target=path) for path in p.tmpfs]
        mounts += [docker.ServiceTaskSpecContainerSpecMountArgs(type="volume", target=path) for path in p.spool]

    replicas, constraints, max_per_node = d.replicas, [], None  # type: ignore[var-annotated]
    if d.role == "data":
        constraints = [ON_DATA_NODE]
    elif d.role == "edge":
        # One task on each edge node. Not `global` mode: the provider cannot wait for a global
        # service to converge, and the `up` must fail when nginx does not start.
        replicas, constraints, max_per_node = site.edge_count, [ON_EDGE_NODES], 1
    elif d.every_node:
        replicas, max_per_node = site.node_count, 1
    ports = [docker.ServiceEndpointSpecPortArgs(target_port=i, published_port=e, publish_mode="host", protocol="tcp")
             for i, e in d.public_ports]
    # Start-first needs a task that can run beside its successor: no volume, no host port.
    order = "start-first" if d.role == "app" else "stop-first"
    update = dict(parallelism=1, delay="2s", failure_action="rollback", monitor="15s", max_failure_ratio="0.0", order=order)
    labels = {LABEL_SERVICE: d.service, LABEL_KIND: "service", LABEL_STACK: pulumi.get_stack(), LABEL_NAME: name, **d.labels}
    return docker.Service(
        d.service,
        name=name,
        labels=[docker.ServiceLabelArgs(label=k, value=v) for k, v in sorted(labels.items())],
        task_spec=docker.ServiceTaskSpecArgs(
            container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                image=d.image,
                env=all_env,
                args=list(d.command) if d.command is not None else None,
                user=d.user,
                read_only=p.read_only_root,
                cap_drops=["ALL"],
                cap_adds=list(p.cap_add) or None,
                sysctl=LOW_PORTS_SYSCTL if p.low_ports else None,
                healthcheck=healthcheck(d.probe),
                mounts=mounts or None,
                secrets=secrets or None,
                configs=configs or None,
                stop_grace_period="30s",  # a clean shutdown (Postgres checkpoint, Redis AOF)
                labels=[docker.ServiceTaskSpecContainerSpecLabelArgs(label=k, value=v) for k, v in sorted(labels.items())],
            ),
            resources=docker.ServiceTaskSpecResourcesArgs(
                limits=docker.ServiceTaskSpecResourcesLimitsArgs(
                    nano_cpus=round(d.limits.cpus * 1_000_000_000), memory_bytes=d.limits.memory_mb * 1024 * 1024
                )
            ),
            restart_policy=docker.ServiceTaskSpecRestartPolicyArgs(condition="any", delay="2s", window="30s"),
            placement=(docker.ServiceTaskSpecPlacementArgs(constraints=constraints or None, max_replicas=max_per_node)
                       if constraints or max_per_node else None),
            networks_advanceds=[docker.ServiceTaskSpecNetworksAdvancedArgs(name=site.network, aliases=[d.service])],
            log_driver=docker.ServiceTaskSpecLogDriverArgs(name=LOG_DRIVER, options=LOG_OPTS),
        ),
        mode=docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=replicas)),
        update_config=docker.ServiceUpdateConfigArgs(**update),
        rollback_config=docker.ServiceRollbackConfigArgs(**{**update, "failure_action": "pause"}),
        endpoint_spec=docker.ServiceEndpointSpecArgs(mode="dnsrr", ports=ports or None),
        # `up` waits until every task runs and is healthy, so a release that fails its
        # healthchecks fails the `up`, after Swarm has rolled it back.
        converge_config=docker.ServiceConvergeConfigArgs(delay="2s", timeout=f"{d.start_timeout + 60}s"),
        opts=pulumi.ResourceOptions(parent=parent, provider=site.provider, depends_on=depends_on or []),
    )
