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
