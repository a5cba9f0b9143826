"""Small stand-in for the ai-meeting program, used by the guardrails e2e tests and to capture
the preview/refresh JSON fixtures (tests/guardrails/fixtures/README.md).

Built like the real program, so the engine shows the same shapes: resources inside component
resources (URNs with `parent$child` types), containers taking the *id* of a RemoteImage (not
known during a preview that changes the image), the same labels, data volumes, a generated
password with a rotation keeper, a postgres-like container mounting its volume. Each container
just sleeps, so plan / policy / guard / drift / StackReference tests run in seconds.

Config: prefix (names of containers and volumes), api_image, base_image; optional
pg_volume_name, redis_volume_name, db_password_rotation, api_port.
"""

import pulumi
import pulumi_docker as docker
import pulumi_random as random

config = pulumi.Config()
prefix = config.require("prefix")
api_image = config.require("api_image")
base_image = config.require("base_image")
pg_volume_name = config.get("pg_volume_name") or f"{prefix}-postgres-data"
redis_volume_name = config.get("redis_volume_name") or f"{prefix}-redis-data"
rotation = config.get_int("db_password_rotation") or 0
api_port = config.get_int("api_port")

provider = docker.Provider("docker", host="unix:///var/run/docker.sock")


def labels(service, kind="service"):
    values = {"ai-meeting.service": service, "ai-meeting.kind": kind, "ai-meeting.stack": pulumi.get_stack(),
              "guardrails-e2e": prefix}
    return [docker.ContainerLabelArgs(label=k, value=v) for k, v in values.items()]


class Images(pulumi.ComponentResource):
    def __init__(self, name, opts=None):
        super().__init__("guardrails:app:Images", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        # keep_locally + an image already on the engine: nothing is pulled (local `docker import`).
        self.base = docker.RemoteImage("base-image", name=base_image, keep_locally=True, opts=child)
        self.api = docker.RemoteImage("api-image", name=api_image, keep_locally=True, opts=child)
        self.register_outputs({})


class Data(pulumi.ComponentResource):
    def __init__(self, name, opts=None):
        super().__init__("guardrails:app:Data", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=provider)

        def volume(service, volume_name):
            return docker.Volume(
                f"{service}-data", name=volume_name,
                labels=[docker.VolumeLabelArgs(label="ai-meeting.data", value="true"),
                        docker.VolumeLabelArgs(label="ai-meeting.service", value=service),
                        docker.VolumeLabelArgs(label="guardrails-e2e", value=prefix)],
                opts=child)

        self.postgres = volume("postgres", pg_volume_name)
        self.redis = volume("redis", redis_volume_name)
        self.db_password = random.RandomPassword("db-password", length=32, special=False,
                                                 keepers={"rotation": str(rotation)}, opts=child)
        self.register_outputs({})


class Service(pulumi.ComponentResource):
    """One long-running container with what the real program's service.py gives every one."""

    def __init__(self, name, image, envs=None, volume=None, mount=None, ports=None, opts=None):
        super().__init__("guardrails:app:Service", name, None, opts)
        self.container = docker.Container(
            name,
            name=f"{prefix}-{name}",
            image=image.image_id,
            command=["/bin/sleep", "86400"],
            envs=envs,
            labels=labels(name.split("-")[0]),
            healthcheck=docker.ContainerHealthcheckArgs(tests=["CMD", "/bin/true"], interval="1s",
                                                        timeout="5s", retries=3),
            restart="unless-stopped",
            cpus="0.5",
            memory=128,
            memory_swap=128,
            log_driver="json-file",
            log_opts={"max-size": "1m", "max-file": "2"},
            volumes=[docker.ContainerVolumeArgs(volume_name=volume.name, container_path=mount)] if volume else None,
            ports=ports,
            wait=True,
            wait_timeout=60,
            opts=pulumi.ResourceOptions(parent=self, provider=provider),
        )
        self.register_outputs({})


images = Images("images")
data = Data("data")
password_env = pulumi.Output.concat("POSTGRES_PASSWORD=", data.db_password.result)
postgres = Service("postgres", images.base, envs=[password_env], volume=data.postgres,
                   mount="/var/lib/postgresql/data")
redis = Service("redis", images.base, volume=data.redis, mount="/data")
api = Service("api-1", images.api, envs=[pulumi.Output.concat("DB_PASSWORD=", data.db_password.result)],
              # no api_port: Docker picks a free loopback port (no clash when a new api-1 starts first)
              ports=[docker.ContainerPortArgs(internal=3000, external=api_port, ip="127.0.0.1")])

public_url = f"https://{prefix}.localhost:28443"
pulumi.export("public_url", public_url)
pulumi.export("health_url", f"{public_url}/api/health")
pulumi.export("api_image", api_image)
pulumi.export("database_url", pulumi.Output.secret(pulumi.Output.concat(
    "postgresql://ai_meeting:", data.db_password.result, "@", postgres.container.name, ":5432/ai_meeting")))
