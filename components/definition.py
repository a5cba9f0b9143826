"""A long-running service of the stack, said once and independent of the orchestrator.

A `ServiceDefinition` holds everything that makes a service what it is: image, command,
environment and secrets, healthcheck, limits, volumes, files, labels and its role. Two
backends turn it into resources and add only what truly differs between them:

- components/on_server.py: `docker.Container`s on one engine (target local or ssh);
- components/on_swarm.py: a `docker.Service` on a Docker Swarm (target swarm).

The definitions themselves are in components/catalogue.py. A probe, a limit, a start period
or a script is written there once; a unit test compares both backends' declarations service
by service (tests/unit/test_one_definition.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

import pulumi

from config.model import Limits

# Where a service runs and how it is replaced:
# - data: one instance on its volume, fixed name, stopped before its successor starts; on a
#   swarm pinned to the data node;
# - app: any number of instances anywhere, the new one healthy before the old one goes;
# - edge: the only service listening beyond 127.0.0.1 (nginx); one per edge node on a swarm;
# - ops: monitoring; one fixed instance (node exporter: one per node on a swarm).
Role = Literal["data", "app", "edge", "ops"]

LABEL_SERVICE = "ai-meeting.service"
LABEL_KIND = "ai-meeting.kind"
LABEL_STACK = "ai-meeting.stack"
# `<prefix>-<service>` on every container of the service, on both targets: how scripts find a
# service's container (fixed name on one server, `<name>.<slot>.<task>` on a swarm).
LABEL_NAME = "ai-meeting.name"


@dataclass(frozen=True)
class Probe:
    """The healthcheck. Docker 20.10 has no start_interval: the first check runs one interval
    after the start, so the interval is how long every health-gated step waits at least."""

    test: tuple[str, ...]
    interval: str = "2s"
    timeout: str = "5s"
    retries: int = 25  # 50 s of failures before unhealthy
    start_period: str = "10s"  # grace before failures count


def seconds(duration: str) -> int:
    """A probe duration ("2s", "1m") in seconds."""
    value, unit = int(duration[:-1]), duration[-1]
    return value * {"s": 1, "m": 60}[unit]


def gives_up_after(p: Probe) -> int:
    """Seconds from the start until Docker declares an instance that never answers unhealthy:
    the start period, then `retries` failed probes one interval apart (each within its timeout)."""
    return seconds(p.start_period) + p.retries * seconds(p.interval) + seconds(p.timeout)


def http_probe(url: str, *, insecure: bool = False, **kw: object) -> Probe:
    """An HTTP probe that works in every image we run: curl where it exists, else busybox wget."""
    k, nk = (" -k", " --no-check-certificate") if insecure else ("", "")
    return Probe(test=("CMD-SHELL", f"curl -fsS{k} {url} >/dev/null || wget -q{nk} -O /dev/null {url}"), **kw)  # type: ignore[arg-type]


@dataclass(frozen=True)
class FileSecret:
    """A secret the image can read from a file named by `<env>_FILE` (the official postgres
    and minio images do). One server: `<env>=value` in the environment. Swarm: a docker
    secret under /run/secrets/<file_name> and `<env>_FILE` pointing at it."""

    env: str
    file_name: str
    value: pulumi.Output[str]


@dataclass(frozen=True)
class File:
    """A file in the container: an upload at creation (one server), a docker config or, when
    `secret`, a docker secret (Swarm). A changed content replaces the container/updates the service."""

    path: str
    content: pulumi.Input[str]
    mode: int = 0o644
    secret: bool = False


@dataclass(frozen=True)
class DataVolume:
    """The service's persistent data: a named volume `<prefix>-<name>-data`. One server: the
    stack's own volume resource (protected in prod). Swarm: created by the data node's engine."""

    name: str
    path: str
    read_only: bool = False


@dataclass(frozen=True)
class HostDir:
    """A directory of the server mounted into the container (logs, certificates, metrics)."""

    host_path: str
    path: str
    read_only: bool = False


# Log rotation of every container and task, on both targets (set explicitly: a container
# without it reads back the daemon's defaults and would be replaced by the next `up`).
LOG_DRIVER, LOG_OPTS = "json-file", {"max-size": "20m", "max-file": "5"}

# A non-root process may bind ports below 1024 inside its own network namespace (web as
# user nginx on port 80), without any capability.
LOW_PORTS_SYSCTL = {"net.ipv4.ip_unprivileged_port_start": "0"}


@dataclass(frozen=True)
class Privileges:
    """Least privilege (README: Hardening). Every container runs with no-new-privileges and
    `cap_drop: ALL`; `cap_add` is what the service gets back. With a read-only root
    filesystem the service writes only to its volumes, `tmpfs` (memory) and `spool` (disk
    scratch: an anonymous volume that goes with the container)."""

    read_only_root: bool = True
    cap_add: tuple[str, ...] = ()  # Docker's names, as the engine reads them back: CAP_CHOWN
    pids_limit: int | None = None  # one server only (README: Hardening, Swarm)
    tmpfs: tuple[str, ...] = ("/tmp",)
    spool: tuple[str, ...] = ()
    low_ports: bool = False  # LOW_PORTS_SYSCTL


@dataclass(frozen=True)
class ServiceDefinition:
    service: str
    role: Role
    image: pulumi.Input[str]
    limits: Limits
    probe: Probe
    # The container's command after the image's entrypoint (a Service's `args`).
    command: Sequence[pulumi.Input[str]] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    # Settings that hold secrets, as one secret output (e.g. the API's DATABASE_URL).
    secret_env: pulumi.Output[Mapping[str, str]] | None = None
    file_secrets: Sequence[FileSecret] = ()
    files: Sequence[File] = ()
    volumes: Sequence[DataVolume] = ()
    host_dirs: Sequence[HostDir] = ()  # servers only (the plan's layout under install_dir)
    # (container port, host port): on every address of the host (edge only) ...
    public_ports: Sequence[tuple[int, int]] = ()
    # ... and on 127.0.0.1 only (one server; a swarm publishes nothing on loopback).
    loopback_ports: Sequence[tuple[int, int]] = ()
    # One instance on every node of a swarm (the node exporter); one server: one instance.
    every_node: bool = False
    replicas: int = 1
    # How long a deploy waits for a new instance to become healthy before it fails the `up`.
    start_timeout: int = 120
    # One server: fail as soon as the probe has given up (gives_up_after), not at start_timeout
    # (the provider waits for "healthy" only and ignores "unhealthy"). Stateless services only:
    # a database's first start (initdb) may outlast its probe and still be fine.
    fail_when_unhealthy: bool = False
    user: str | None = None  # None: the image's USER
    labels: Mapping[str, str] = field(default_factory=dict)
    privileges: Privileges = Privileges()

    @property
    def stateful(self) -> bool:
        return self.role == "data"
