"""Deliberately bad containers: the policy pack must stop a preview of this program.

- `postgres` publishes 5432 on 0.0.0.0,
- `worker` has no healthcheck,
- `cache` uses an untagged image,
- `api-1` is fine (no false positive expected).
Only previewed by the tests: nothing is created.
"""

import pulumi
import pulumi_docker as docker

config = pulumi.Config()
image = config.require("base_image")
provider = docker.Provider("docker", host="unix:///var/run/docker.sock")


def container(name, service, **overrides):
    args = dict(
        name=f"guardrails-bad-{name}",
        image=image,
        command=["/bin/sleep", "86400"],
        labels=[docker.ContainerLabelArgs(label="ai-meeting.service", value=service),
                docker.ContainerLabelArgs(label="ai-meeting.kind", value="service")],
        healthcheck=docker.ContainerHealthcheckArgs(tests=["CMD", "/bin/true"], interval="1s"),
        restart="unless-stopped",
        cpus="0.5",
        memory=128,
        log_driver="json-file",
        log_opts={"max-size": "1m", "max-file": "2"},
        wait=True,
    )
    args.update(overrides)
    return docker.Container(name, opts=pulumi.ResourceOptions(provider=provider),
                            **{k: v for k, v in args.items() if v is not None})


container("postgres", "postgres", ports=[docker.ContainerPortArgs(internal=5432, external=5432, ip="0.0.0.0")])
container("worker", "api", healthcheck=None)
container("cache", "redis", image=image.rsplit(":", 1)[0])
container("api-1", "api", ports=[docker.ContainerPortArgs(internal=3000, external=3000, ip="127.0.0.1")])
