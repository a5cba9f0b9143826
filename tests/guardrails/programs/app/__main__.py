"""Tiny stand-in for the ai-meeting program, used by the guardrails e2e tests.

Same providers and conventions as the real program (labels, data volume, RandomPassword, a
postgres-like container mounting the volume, an API container whose image is config), so the
plan / policy / guard / drift / StackReference tests run in seconds against local Docker.
"""

import pulumi
import pulumi_docker as docker
import pulumi_random as random

config = pulumi.Config()
prefix = config.require("prefix")  # unique per test session: container/volume names don't collide
api_image = config.require("api_image")
base_image = config.require("base_image")
pg_volume_name = config.get("pg_volume_name") or f"{prefix}-postgres-data"

provider = docker.Provider("docker", host="unix:///var/run/docker.sock")
opts = pulumi.ResourceOptions(provider=provider)


def labels(service, kind="service", **extra):
    values = {"ai-meeting.service": service, "ai-meeting.kind": kind, "guardrails-e2e": prefix, **extra}
    return [docker.ContainerLabelArgs(label=k, value=v) for k, v in values.items()]


def long_running(name, service, image, **kwargs):
    return docker.Container(
        name,
        name=f"{prefix}-{name}",
        image=image,
        command=["/bin/sleep", "86400"],
        labels=labels(service),
        healthcheck=docker.ContainerHealthcheckArgs(tests=["CMD", "/bin/true"], interval="1s",
                                                    timeout="5s", retries=3),
        restart="unless-stopped",
        cpus="0.5",
        memory=128,
        log_driver="json-file",
        log_opts={"max-size": "1m", "max-file": "2"},
        wait=True,
        wait_timeout=60,
        opts=opts,
        **kwargs,
    )


db_password = random.RandomPassword("db-password", length=32, special=False, opts=opts)
volume = docker.Volume(
    "postgres-data",
    name=pg_volume_name,
    labels=[docker.VolumeLabelArgs(label="ai-meeting.data", value="true"),
            docker.VolumeLabelArgs(label="guardrails-e2e", value=prefix)],
    opts=opts,
)
postgres = long_running("postgres", "postgres", base_image,
                        volumes=[docker.ContainerVolumeArgs(volume_name=volume.name,
                                                            container_path="/var/lib/postgresql/data")])
api = long_running("api-1", "api", api_image,
                   ports=[docker.ContainerPortArgs(internal=3000, external=int(config.get("api_port") or 0) or None,
                                                   ip="127.0.0.1")])

public_url = f"https://{prefix}.localhost:8443"
pulumi.export("public_url", public_url)
pulumi.export("health_url", f"{public_url}/api/health")
pulumi.export("api_image", api.image)
pulumi.export("database_url", pulumi.Output.secret(pulumi.Output.concat(
    "postgresql://ai_meeting:", db_password.result, "@", postgres.name, ":5432/ai_meeting")))
