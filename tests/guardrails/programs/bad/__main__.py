"""Deliberately bad resources: the policy pack must stop a preview of this program, each rule
with its own verdict. Previewed as stack `prod-bad` (a prod stack by its name), so the prod rules
apply too. Only previewed by the tests: nothing is created.

- `postgres` publishes 5432 on 0.0.0.0                       -> ports-loopback-only
- `worker` has no healthcheck                                -> container-healthcheck
- `sloppy`: restart "no", no limits, log_driver "none"        -> restart-policy, resource-limits, log-rotation
- `cache` uses an untagged image, written literally          -> image-pinned-tag (container)
- RemoteImage `latest-image` is `...:latest`                 -> image-pinned-tag (RemoteImage); `web`
  takes its id, unknown in preview: judged through the RemoteImage, not deferred
- `short-password` is 16 characters and unprotected          -> password-min-length, prod-stateful-protected
- volume `data` holds data and is unprotected                -> prod-stateful-protected
- `nginx` publishes only 80, config tls.mode self-signed     -> prod-tls-required
- `computed`'s image comes from a RandomString, not a RemoteImage: unknown in preview, so the
  advisory preview-unknowns says image-pinned-tag cannot decide it now
- `api-1` is fine (its image is the id of a pinned RemoteImage): no false positive expected.

Swarm services (docker.Service; a preview needs no swarm):
- `svc-postgres` publishes 5432 (host mode), keeps its data on tmpfs, has no placement
  constraint and passes POSTGRES_PASSWORD in plain env -> ports-loopback-only,
  prod-stateful-protected, service-secrets-as-files
- `svc-sloppy`: `:latest`, no healthcheck, restart condition none, no limits, no log driver
                                                             -> image-pinned-tag and the four long-running rules
- `svc-api` and `svc-nginx` (80/443 in host mode) are fine: judged by every rule, no false positive.
"""

import pulumi
import pulumi_docker as docker
import pulumi_random as random

config = pulumi.Config()
image = config.require("base_image")
provider = docker.Provider("docker", host="unix:///var/run/docker.sock")
opts = pulumi.ResourceOptions(provider=provider)

pinned = docker.RemoteImage("base-image", name=image, keep_locally=True, opts=opts)
latest = docker.RemoteImage("latest-image", name=image.rsplit(":", 1)[0] + ":latest", keep_locally=True,
                            opts=opts)


def container(name, service, **overrides):
    args = dict(
        name=f"guardrails-bad-{name}",
        image=pinned.image_id,
        command=["/bin/sleep", "86400"],
        labels=[docker.ContainerLabelArgs(label="ai-meeting.service", value=service),
                docker.ContainerLabelArgs(label="ai-meeting.kind", value="service")],
        healthcheck=docker.ContainerHealthcheckArgs(tests=["CMD", "/bin/true"], interval="1s"),
        restart="unless-stopped",
        cpus="0.5",
        memory=128,
        memory_swap=128,
        log_driver="json-file",
        log_opts={"max-size": "1m", "max-file": "2"},
        wait=True,
    )
    args.update(overrides)
    return docker.Container(name, opts=opts, **{k: v for k, v in args.items() if v is not None})


container("postgres", "postgres", ports=[docker.ContainerPortArgs(internal=5432, external=5432, ip="0.0.0.0")])
container("worker", "api", healthcheck=None)
container("sloppy", "web", restart="no", cpus=None, memory=None, memory_swap=None, log_driver="none",
          log_opts=None)
container("cache", "redis", image=image.rsplit(":", 1)[0])
container("web", "web", image=latest.image_id)
container("nginx", "nginx", ports=[docker.ContainerPortArgs(internal=80, external=28080, ip="0.0.0.0")])
tag = random.RandomString("tag", length=8, special=False, opts=opts)
container("computed", "api", image=tag.result.apply(lambda _: image))
container("api-1", "api", ports=[docker.ContainerPortArgs(internal=3000, ip="127.0.0.1")])

random.RandomPassword("short-password", length=16, opts=opts)
docker.Volume("data", name="guardrails-bad-data",
              labels=[docker.VolumeLabelArgs(label="ai-meeting.data", value="true")], opts=opts)


def service(name, service_label, spec=None, task=None, **overrides):
    """A swarm service as components/swarm_services.py declares one; `spec` and `task` replace
    keys of its container spec and task spec (None removes one)."""
    container_spec = dict(
        image=image,
        commands=["/bin/sleep", "86400"],
        healthcheck=docker.ServiceTaskSpecContainerSpecHealthcheckArgs(tests=["CMD", "/bin/true"], interval="2s"),
    )
    container_spec.update(spec or {})
    task_spec = dict(
        resources=docker.ServiceTaskSpecResourcesArgs(
            limits=docker.ServiceTaskSpecResourcesLimitsArgs(nano_cpus=500_000_000, memory_bytes=128 * 1024 * 1024)),
        restart_policy=docker.ServiceTaskSpecRestartPolicyArgs(condition="any", delay="2s"),
        log_driver=docker.ServiceTaskSpecLogDriverArgs(name="json-file", options={"max-size": "1m", "max-file": "2"}),
    )
    task_spec.update(task or {})
    args = dict(
        name=f"guardrails-bad-{name}",
        labels=[docker.ServiceLabelArgs(label="ai-meeting.service", value=service_label)],
        task_spec=docker.ServiceTaskSpecArgs(
            container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                **{k: v for k, v in container_spec.items() if v is not None}),
            **{k: v for k, v in task_spec.items() if v is not None}),
        mode=docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=1)),
    )
    args.update(overrides)
    return docker.Service(name, opts=opts, **args)


service("svc-postgres", "postgres",
        spec={"env": {"POSTGRES_PASSWORD": "not-a-real-one"},
              "mounts": [docker.ServiceTaskSpecContainerSpecMountArgs(type="tmpfs", target="/var/lib/postgresql/data")]},
        endpoint_spec=docker.ServiceEndpointSpecArgs(ports=[
            docker.ServiceEndpointSpecPortArgs(target_port=5432, published_port=25432, publish_mode="host")]))
service("svc-sloppy", "web", spec={"image": image.rsplit(":", 1)[0] + ":latest", "healthcheck": None},
        task={"restart_policy": docker.ServiceTaskSpecRestartPolicyArgs(condition="none"),
              "resources": None, "log_driver": None})
service("svc-api", "api")
service("svc-nginx", "nginx",
        task={"placement": docker.ServiceTaskSpecPlacementArgs(constraints=["node.labels.ai-meeting.edge==true"])},
        endpoint_spec=docker.ServiceEndpointSpecArgs(ports=[
            docker.ServiceEndpointSpecPortArgs(target_port=80, published_port=28081, publish_mode="host"),
            docker.ServiceEndpointSpecPortArgs(target_port=443, published_port=28443, publish_mode="host")]))
