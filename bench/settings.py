"""The two sides of the benchmark: one stack config each, from Pulumi.dev.yaml plus overrides.

Both sides run the same images, healthchecks, limits and nginx config (the dev stack's), on
this machine's one Docker engine, one after the other. Each side has its own names and ports
so neither can collide with the other, nor with the other stacks on this engine (ai-meeting,
aim-e2e, aim-guard; ports 80/443/18080/18443/28080/28443, the prod test server). Ports are
below 32768 so they never meet the kernel's ephemeral range.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml

from config import StackConfig, validate_config
from tests.support import REPO  # bench/ depends on tests/support, never on a test tier

BENCH = REPO / "bench"

DEMO_1 = "ai-meeting-local/api:demo-1"
DEMO_2 = "ai-meeting-local/api:demo-2"
VERSION_1, VERSION_2 = "demo-1", "demo-2"

# The API's migration command in the demo image (Pulumi.dev.yaml has it too).
MIGRATE = ["ai-meeting-api", "migrate"]


@dataclass(frozen=True)
class Side:
    key: str  # "compose" or "pulumi"
    title: str
    name_prefix: str
    http_port: int
    https_port: int
    loopback: dict[str, int]

    def overrides(self, replicas: int = 1) -> dict[str, Any]:
        """Top-level `ai-meeting:` keys set on top of Pulumi.dev.yaml."""
        return {
            "name_prefix": self.name_prefix,
            "nginx": {"bind_address": "127.0.0.1", "http_port": self.http_port, "https_port": self.https_port},
            "loopback_ports": dict(self.loopback),
            "api": {"replicas": replicas, "migrate_command": MIGRATE, "start_timeout": 120},
        }


PULUMI = Side(
    key="pulumi",
    title="pulumi up",
    name_prefix="aim-bench",
    http_port=21080,
    https_port=21443,
    loopback={"postgres": 21432, "redis": 21379, "minio": 21900, "minio_console": 21901, "api": 21300},
)
COMPOSE = Side(
    key="compose",
    title="docker compose",
    name_prefix="aim-bench-compose",
    http_port=22080,
    https_port=22443,
    loopback={"postgres": 22432, "redis": 22379, "minio": 22900, "minio_console": 22901, "api": 22300},
)
COMPOSE_PROJECT = "aim-bench-compose"
# The plan publishes the API container itself on 127.0.0.1:3000. A single host port cannot
# be scaled (`--scale api=3` would clash), so the compose file publishes a small range: each
# replica takes a free port of it. This is the "straight to one replica" door of item 5.
COMPOSE_API_DIRECT = (22310, 22319)


def dev_stack_values() -> dict[str, Any]:
    """Pulumi.dev.yaml's `ai-meeting:` keys, without the namespace."""
    doc = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text()) or {}
    return {k.split(":", 1)[1]: v for k, v in (doc.get("config") or {}).items() if k.startswith("ai-meeting:")}


def merged_overrides(side: Side, replicas: int = 1) -> dict[str, Any]:
    """The side's overrides merged into Pulumi.dev.yaml's values of the same keys: what the
    Pulumi side writes into its stack file, key by key."""
    dev = dev_stack_values()
    merged: dict[str, Any] = {}
    for key, value in side.overrides(replicas).items():
        if isinstance(value, dict) and isinstance(dev.get(key), dict):
            merged[key] = {**copy.deepcopy(dev[key]), **value}
        else:
            merged[key] = value
    return merged


def stack_config(side: Side, replicas: int = 1) -> StackConfig:
    raw = {**dev_stack_values(), **merged_overrides(side, replicas)}
    raw.setdefault("environment", "dev")
    return validate_config(raw, "bench")
