"""Generated secrets (R4): stored encrypted in state, exported only as secrets."""

from __future__ import annotations

import pulumi
import pulumi_random as random

from config.model import Rotation

# Alphanumeric only: these go into URLs (DATABASE_URL, REDIS_URL) and shell-free env files
# unescaped. 40 characters of [A-Za-z0-9] is ~238 bits, more than the plan's 32 random bytes.
PASSWORD_LENGTH = 40
# The plan: `openssl rand -base64 64` (512 bits). 88 alphanumerics carry ~524 bits. Not
# RandomBytes: its resource *id* is the base64 value itself, and ids are never encrypted in
# state (found by the reliability tier's secret scan of `pulumi stack export`).
JWT_SECRET_LENGTH = 88


class Secrets(pulumi.ComponentResource):
    db_password: pulumi.Output[str]
    redis_password: pulumi.Output[str]
    minio_password: pulumi.Output[str]
    turn_password: pulumi.Output[str]
    jwt_secret: pulumi.Output[str]

    def __init__(self, name: str, rotation: Rotation, protect: bool, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ai-meeting:secrets:Secrets", name, None, opts)
        # Postgres reads its password only at first init: a regenerated password would lock
        # the API out of its own database (pulumi-random #258). Protect them in prod; rotate
        # with the README runbook, which changes the password inside Postgres too.
        child = pulumi.ResourceOptions(parent=self, protect=protect)

        def password(resource: str, generation: int) -> pulumi.Output[str]:
            return random.RandomPassword(
                resource,
                length=PASSWORD_LENGTH,
                special=False,
                min_lower=2,
                min_upper=2,
                min_numeric=2,
                keepers={"rotation": str(generation)},
                opts=child,
            ).result

        self.db_password = password("db-password", rotation.db_password)
        self.redis_password = password("redis-password", rotation.redis_password)
        self.minio_password = password("minio-password", rotation.minio_password)
        self.turn_password = password("turn-password", rotation.turn_password)
        self.jwt_secret = random.RandomPassword(
            "jwt-secret",
            length=JWT_SECRET_LENGTH,
            special=False,
            keepers={"rotation": str(rotation.jwt_secret)},
            opts=child,
        ).result
        self.register_outputs(
            {
                "db_password": self.db_password,
                "redis_password": self.redis_password,
                "minio_password": self.minio_password,
                "turn_password": self.turn_password,
                "jwt_secret": self.jwt_secret,
            }
        )
