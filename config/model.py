"""The whole stack configuration as one pydantic model.

Every key an operator can set lives here, with its default and its rule. The model is
validated as a whole before any resource is declared, so bad input never half-applies.
"""

from __future__ import annotations

import ipaddress
import re
from fractions import Fraction
from typing import Annotated, Literal, Union
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

# Hostnames as RFC 1123 labels; "localhost" is allowed for dev.
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
# A Docker image reference with an explicit tag or digest: registry/path:tag or path@sha256:...
_IMAGE = re.compile(
    r"^(?P<name>[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)
_CRON_FIELD = r"(\*|[0-9]+(-[0-9]+)?)(/[0-9]+)?(,(\*|[0-9]+(-[0-9]+)?)(/[0-9]+)?)*"
_CRON = re.compile(rf"^{_CRON_FIELD}( {_CRON_FIELD}){{4}}$")
_CRON_RANGES = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_DURATION = re.compile(r"^[1-9][0-9]*[smhdw]$")  # the app's JWT lifetimes: 15m, 7d, 30d
_SIZE = re.compile(r"^[1-9][0-9]*(kb|mb|gb)$")  # Redis memory sizes
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")  # PostgreSQL identifiers we accept unquoted
_BUCKET = re.compile(r"^(?!xn--)(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

Hostname = Annotated[str, Field(min_length=1, max_length=253)]
Port = Annotated[int, Field(ge=1, le=65535)]


class Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_hostname(value: str) -> str:
    if not _HOSTNAME.match(value):
        raise ValueError(f"'{value}' is not a valid lower-case host name (letters, digits, '-', '.')")
    return value


# --- where the stack runs ---------------------------------------------------------------


def _check_private_key(v: SecretStr) -> SecretStr:
    if "PRIVATE KEY-----" not in v.get_secret_value():
        raise ValueError("must be an OpenSSH/PEM private key (set it with `pulumi config set --secret`)")
    return v


class LocalTarget(Strict):
    """The operator's own Docker engine (dev)."""

    kind: Literal["local"] = "local"
    docker_host: str = "unix:///var/run/docker.sock"

    @field_validator("docker_host")
    @classmethod
    def _socket_or_tcp(cls, v: str) -> str:
        if not re.match(r"^(unix|tcp|npipe)://", v):
            raise ValueError("must start with unix://, tcp:// or npipe:// (use kind: ssh for a server)")
        return v


class SshTarget(Strict):
    """A server reached over SSH (prod): bootstrapped, then Docker over ssh://."""

    kind: Literal["ssh"] = "ssh"
    host: str
    port: Port = 22
    user: str = Field(default="deploy", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    private_key: SecretStr
    # Pin the server's host key (a known_hosts line's key part, e.g. "ssh-ed25519 AAAA...").
    # Without it the first connection is trusted and remembered (accept-new).
    host_key: str | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if re.match(r"^[0-9.]+$", v) or ":" in v:
            return v  # an IPv4/IPv6 literal
        return _check_hostname(v)

    _pem = field_validator("private_key")(_check_private_key)

    @property
    def docker_host(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"


# Node labels the program places services by (README: Docker Swarm).
DATA_LABEL = "ai-meeting.data"  # postgres, redis, minio and their volumes live on this node
EDGE_LABEL = "ai-meeting.edge"  # nginx publishes 80/443 (host mode) on these nodes
_LABEL_KEY = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


class SwarmNode(Strict):
    """One server of a Docker Swarm: reached over SSH (bootstrap, swarm init/join, images)."""

    host: str
    port: Port = 22
    user: str = Field(default="deploy", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    role: Literal["manager", "worker"] = "worker"
    # Address the other nodes reach this one on (swarm ports 2377, 7946, 4789). Default: host.
    advertise_addr: str | None = None
    host_key: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("host", "advertise_addr")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is None or re.match(r"^[0-9.]+$", v) or ":" in v:
            return v
        return _check_hostname(v)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not _LABEL_KEY.match(key):
                raise ValueError(f"label '{key}': keys are lower-case letters, digits, '.', '_' and '-'")
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,63}", value):
                raise ValueError(f"label '{key}': value '{value}' must be 1-63 of letters, digits, '.', '_', '-'")
        return v

    @property
    def cluster_addr(self) -> str:
        return self.advertise_addr or self.host

    def ssh_target(self, private_key: SecretStr) -> SshTarget:
        return SshTarget(host=self.host, port=self.port, user=self.user, private_key=private_key, host_key=self.host_key)


class SwarmTarget(Strict):
    """Several servers as one Docker Swarm: each bootstrapped like an ssh target, the swarm
    formed by the program, services deployed through the first manager's engine."""

    kind: Literal["swarm"] = "swarm"
    nodes: list[SwarmNode] = Field(min_length=1)
    private_key: SecretStr  # the deploy user's key, the same on every node

    _pem = field_validator("private_key")(_check_private_key)

    @model_validator(mode="after")
    def _roles(self) -> "SwarmTarget":
        if self.nodes[0].role != "manager":
            raise ValueError("target.nodes[0]: the first node initialises the swarm; it must be a manager")
        seen: set[tuple[str, int]] = set()
        addrs: set[str] = set()
        for i, n in enumerate(self.nodes):
            if (n.host, n.port) in seen:
                raise ValueError(f"target.nodes[{i}]: {n.host}:{n.port} is listed twice")
            if n.cluster_addr in addrs:
                raise ValueError(f"target.nodes[{i}]: advertise address {n.cluster_addr} is used by another node")
            seen.add((n.host, n.port))
            addrs.add(n.cluster_addr)
        data = [i for i, n in enumerate(self.nodes) if n.labels.get(DATA_LABEL) == "true"]
        if len(data) != 1:
            raise ValueError(
                f"target.nodes: exactly one node needs the label {DATA_LABEL}: \"true\" "
                f"(postgres, redis and minio stay on it with their volumes); found {len(data)}"
            )
        if not any(n.labels.get(EDGE_LABEL) == "true" for n in self.nodes):
            raise ValueError(f"target.nodes: at least one node needs the label {EDGE_LABEL}: \"true\" (nginx's 80/443)")
        managers = sum(n.role == "manager" for n in self.nodes)
        if managers % 2 == 0:
            # Raft needs a majority: 2 managers tolerate no more failures than 1, and 4 no more than 3.
            raise ValueError(f"target.nodes: {managers} managers; use an odd number (1, 3, 5) for a Raft majority")
        return self

    @property
    def manager(self) -> SwarmNode:
        return self.nodes[0]

    @property
    def docker_host(self) -> str:
        m = self.manager
        return f"ssh://{m.user}@{m.host}:{m.port}"


Target = Annotated[Union[LocalTarget, SshTarget, SwarmTarget], Field(discriminator="kind")]


# --- TLS (R13) ------------------------------------------------------------------------


class TlsConfig(Strict):
    mode: Literal["self-signed", "letsencrypt", "provided"] = "self-signed"
    email: str | None = None  # Let's Encrypt account e-mail
    acme_server: str | None = None  # None = Let's Encrypt production; set to a staging/test CA
    acme_ca_bundle: str | None = None  # path on the server to trust a test CA (pebble)
    certificate: SecretStr | None = None  # PEM chain, for mode "provided"
    private_key: SecretStr | None = None  # PEM key, for mode "provided"
    self_signed_validity_hours: int = Field(default=8760, ge=24, le=87600)

    @model_validator(mode="after")
    def _mode_needs(self) -> "TlsConfig":
        if self.mode == "letsencrypt" and not (self.email and re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", self.email)):
            raise ValueError("tls.email: a valid e-mail is required when tls.mode is letsencrypt")
        if self.mode == "provided":
            missing = [k for k in ("certificate", "private_key") if getattr(self, k) is None]
            if missing:
                raise ValueError(
                    f"tls.{missing[0]}: required when tls.mode is provided (set with `pulumi config set --secret`)"
                )
            if "BEGIN CERTIFICATE" not in self.certificate.get_secret_value():  # type: ignore[union-attr]
                raise ValueError("tls.certificate: must be a PEM certificate chain")
            if "PRIVATE KEY" not in self.private_key.get_secret_value():  # type: ignore[union-attr]
                raise ValueError("tls.private_key: must be a PEM private key")
        return self


# --- images ---------------------------------------------------------------------------


class Images(Strict):
    """One pinned image per service. `latest` or a missing tag is refused: a moving tag
    replaces containers at random and makes rollbacks impossible."""

    pull: bool = True  # False: use images already on the target (air-gapped hosts, local builds)
    # ssh targets: copy each image from this machine's engine to the server (docker save | ssh
    # docker load) before deploying, for servers that reach no registry.
    upload: bool = False
    postgres: str = "postgres:14-alpine"
    redis: str = "redis:7.2-alpine"
    minio: str = "minio/minio:RELEASE.2025-04-22T22-12-26Z"
    nginx: str = "nginx:1.27-alpine"
    api: str = "ghcr.io/your-org/ai-meeting/api:0.1.0"
    web: str = "ghcr.io/your-org/ai-meeting/web:0.1.0"
    prometheus: str = "prom/prometheus:v2.53.0"
    grafana: str = "grafana/grafana:11.1.0"
    node_exporter: str = "prom/node-exporter:v1.8.1"
    blackbox_exporter: str = "prom/blackbox-exporter:v0.25.0"
    alertmanager: str = "prom/alertmanager:v0.27.0"

    @field_validator("postgres", "redis", "minio", "nginx", "api", "web", "prometheus", "grafana",
                     "node_exporter", "blackbox_exporter", "alertmanager")
    @classmethod
    def _pinned(cls, v: str) -> str:
        m = _IMAGE.match(v)
        if not m:
            raise ValueError(f"'{v}' is not a valid image reference (name:tag or name@sha256:digest)")
        if not m.group("tag") and not m.group("digest"):
            raise ValueError(f"'{v}' has no tag: pin a version, e.g. '{v}:1.2.3'")
        if m.group("tag") == "latest" and not m.group("digest"):
            raise ValueError(f"'{v}' uses 'latest': pin a version so re-runs are repeatable")
        return v


# --- per-service resources --------------------------------------------------------------


def docker_cpus(cpus: float) -> str:
    """`cpus` written exactly as pulumi-docker reads it back from the engine (its
    nanoInt64ToDecimalString): 1 -> "1.0", 0.5 -> "0.5", 1.25 -> "1.25". `cpus` forces a
    replacement, so sending "1" while the provider reads "1.0" replaced every container on
    every `up`."""
    nano = Fraction(round(cpus * 1_000_000_000), 1_000_000_000)
    fixed9 = f"{nano.numerator * 10**9 // nano.denominator // 10**9}.{nano.numerator * 10**9 // nano.denominator % 10**9:09d}"
    if fixed9.count("0") == 9:  # the provider's own test, quirks included ("10.000000000" has 10)
        return f"{float(nano):.1f}"
    return fixed9.rstrip("0")


class Limits(Strict):
    cpus: float = Field(gt=0, le=64)
    memory_mb: int = Field(ge=64, le=262144)

    @field_validator("cpus")
    @classmethod
    def _cpus_round_trip(cls, v: float) -> float:
        # The provider's read-back format loses some values (0.05 reads back as "0.1", 10 as
        # "10."): those would replace the container on every `up`, so refuse them up front.
        shown = docker_cpus(v)
        if shown.endswith(".") or round(float(shown), 9) != round(v, 9):
            raise ValueError(
                f"{v} CPUs cannot be set reliably (the Docker provider reads it back as '{shown}'); "
                "use a value such as 0.25, 0.5, 1, 1.5 or 2 (not 10, 20, ... nor below 0.1)"
            )
        return v


class Resources(Strict):
    postgres: Limits = Limits(cpus=2, memory_mb=2048)
    redis: Limits = Limits(cpus=1, memory_mb=2560)  # above maxmemory 2gb: room for fork/AOF rewrite
    minio: Limits = Limits(cpus=1, memory_mb=1024)
    api: Limits = Limits(cpus=2, memory_mb=2048)  # the plan: 2 CPU / 2G per API
    web: Limits = Limits(cpus=0.5, memory_mb=256)
    nginx: Limits = Limits(cpus=1, memory_mb=256)
    monitoring: Limits = Limits(cpus=0.5, memory_mb=512)

    @model_validator(mode="before")
    @classmethod
    def _keep_the_other_default(cls, data):
        # `pulumi config set --path ai-meeting:resources.nginx.cpus 2` writes only `cpus`: the
        # service keeps its default memory limit rather than failing on a missing key.
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, value in data.items():
            field = cls.model_fields.get(name)
            if field is not None and isinstance(value, dict):
                merged[name] = {**field.default.model_dump(), **value}
        return merged


# --- least privilege (README: Hardening) -------------------------------------------------

# Capabilities a service may get back after `cap_drop: ALL`: Docker's default set, nothing
# beyond it (SYS_ADMIN, NET_ADMIN, ... are never needed by these services).
Capability = Literal[
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
]


def _pids(default: int) -> int:
    return Field(default=default, ge=32, le=65536)  # type: ignore[return-value]


class ServiceHardening(Strict):
    """One service's containers. Always: no-new-privileges and `cap_drop: ALL`. Tighten or relax
    here: `cap_add` gives capabilities back, `read_only_root: false` makes the root filesystem
    writable again, `pids_limit` caps its processes and threads (one server only). A key left
    out keeps the service's default (the subclasses below)."""

    read_only_root: bool = True
    cap_add: list[Capability] = Field(default_factory=list)
    pids_limit: int = _pids(256)

    @field_validator("cap_add")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a capability is listed twice")
        return sorted(v)


class PostgresHardening(ServiceHardening):
    pids_limit: int = _pids(512)  # a process per connection (max_connections 100) and the workers


class RedisHardening(ServiceHardening):
    pids_limit: int = _pids(64)


class MinioHardening(ServiceHardening):
    pids_limit: int = _pids(1024)  # Go: every OS thread counts


class WebHardening(ServiceHardening):
    pids_limit: int = _pids(64)


class NginxHardening(ServiceHardening):
    # The master process is root: it binds 80/443, reads the private key and starts the
    # workers as user nginx (SETUID/SETGID), owning their temp directories (CHOWN).
    cap_add: list[Capability] = Field(default_factory=lambda: ["CHOWN", "NET_BIND_SERVICE", "SETGID", "SETUID"])
    pids_limit: int = _pids(128)


class Hardening(Strict):
    """Per service; defaults are what each image needs and no more (README: Hardening)."""

    postgres: PostgresHardening = PostgresHardening()
    redis: RedisHardening = RedisHardening()
    minio: MinioHardening = MinioHardening()
    api: ServiceHardening = ServiceHardening()
    web: WebHardening = WebHardening()
    nginx: NginxHardening = NginxHardening()
    monitoring: ServiceHardening = ServiceHardening()  # Prometheus, exporters, Alertmanager, Grafana


# --- application settings (R5) ---------------------------------------------------------


class ApiConfig(Strict):
    replicas: int = Field(default=1, ge=1, le=20)
    port: Port = 3000
    health_path: str = Field(default="/health", pattern=r"^/[A-Za-z0-9/_.-]*$")
    # One-shot migrations run in the API image after the database is healthy (§7.2).
    migrate_command: list[str] = Field(default_factory=lambda: ["npm", "run", "migration:run"], min_length=1)
    run_migrations: bool = True
    # Seconds a new replica has to become healthy; a release that does not fails the `up`
    # there, and the replicas already serving keep serving. On one server the `up` fails
    # sooner, once the healthcheck has given up (start_period + 15 failed probes 2 s apart).
    start_timeout: int = Field(default=180, ge=30, le=1800)
    # Grace before failed health probes count (an API that boots slowly needs more).
    start_period: int = Field(default=20, ge=5, le=600)
    # The uid the API image runs as: on a server it owns <install_dir>/logs/app, where the API
    # writes its log file (the plan's ./logs/app mount).
    log_uid: int = Field(default=10001, ge=0, le=2**31 - 1)


class AppSettings(Strict):
    node_env: Literal["production", "development", "test"] = "production"
    log_level: Literal["fatal", "error", "warn", "info", "debug", "trace"] = "info"
    log_format: Literal["json", "text"] = "json"
    jwt_expires_in: str = "7d"
    refresh_token_expires_in: str = "30d"
    enable_metrics: bool = True
    metrics_port: Port = 9090

    @field_validator("jwt_expires_in", "refresh_token_expires_in")
    @classmethod
    def _duration(cls, v: str) -> str:
        if not _DURATION.match(v):
            raise ValueError(f"'{v}' is not a duration like 15m, 12h, 7d")
        return v


class DatabaseConfig(Strict):
    name: str = "ai_meeting"
    user: str = "ai_meeting"
    # A change of images.postgres to another major version: refused, or (dump-restore) the
    # data is dumped, moved aside and restored into the new version (README: PostgreSQL major upgrade).
    upgrade: Literal["refuse", "dump-restore"] = "refuse"

    @field_validator("name", "user")
    @classmethod
    def _ident(cls, v: str) -> str:
        if not _IDENT.match(v):
            raise ValueError(f"'{v}' must be a lower-case identifier (a-z, 0-9, _; not starting with a digit)")
        return v


class RedisConfig(Strict):
    maxmemory: str = "2gb"
    maxmemory_policy: Literal[
        "noeviction", "allkeys-lru", "allkeys-lfu", "allkeys-random",
        "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl",
    ] = "allkeys-lru"
    appendonly: bool = True

    @field_validator("maxmemory")
    @classmethod
    def _size(cls, v: str) -> str:
        if not _SIZE.match(v.lower()):
            raise ValueError(f"'{v}' is not a size like 512mb or 2gb")
        return v.lower()


class MinioConfig(Strict):
    root_user: str = Field(default="minioadmin", min_length=3, max_length=64)
    bucket: str = "ai-meeting-recordings"
    console: bool = True

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        if not _BUCKET.match(v):
            raise ValueError(f"'{v}' is not a valid S3 bucket name (3-63 of a-z, 0-9, '.', '-')")
        return v


class SmtpConfig(Strict):
    host: str = "smtp.example.com"
    port: Port = 587
    user: str = ""
    password: SecretStr = SecretStr("")


class WebRtcConfig(Strict):
    stun_servers: list[str] = Field(default_factory=lambda: ["stun:stun.l.google.com:19302"], min_length=1)
    turn_server: str = "turn:turn.example.com:3478"
    turn_username: str = "turnuser"

    @field_validator("stun_servers")
    @classmethod
    def _stun(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if not s.startswith(("stun:", "stuns:"))]
        if bad:
            raise ValueError(f"{bad} must start with stun: or stuns:")
        return v

    @field_validator("turn_server")
    @classmethod
    def _turn(cls, v: str) -> str:
        if not v.startswith(("turn:", "turns:")):
            raise ValueError(f"'{v}' must start with turn: or turns:")
        return v


# --- operations ----------------------------------------------------------------------


class OffsiteBackupConfig(Strict):
    """A copy of every backup off the server (README: Off-site backups): encrypted on the server
    with age to a key only the stack holds, uploaded to an S3-compatible bucket."""

    enabled: bool = False
    endpoint: str | None = None  # https://s3.example.com (S3 API); http:// only for a private network
    bucket: str | None = None
    prefix: str = Field(default="", pattern=r"^([a-z0-9][a-z0-9._-]*/)*$")  # e.g. "prod/"
    access_key: str | None = None
    secret_key: SecretStr | None = None
    retention_days: int = Field(default=90, ge=1, le=3650)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$", v):
            raise ValueError(f"'{v}' must be an http(s)://host[:port] S3 endpoint")
        return v.rstrip("/") if v else v

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", v):
            raise ValueError(f"'{v}' is not an S3 bucket name (3-63 of a-z, 0-9, '.', '-')")
        return v

    @field_validator("access_key")
    @classmethod
    def _access_key(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z0-9._+=/-]{3,128}$", v):
            raise ValueError("must be 3-128 of A-Z, a-z, 0-9 and ._+=/-")
        return v

    @model_validator(mode="after")
    def _complete(self) -> "OffsiteBackupConfig":
        if self.enabled:
            for key in ("endpoint", "bucket", "access_key", "secret_key"):
                if getattr(self, key) is None:
                    hint = " (set with `pulumi config set --secret`)" if key == "secret_key" else ""
                    raise ValueError(f"backup.offsite.{key}: required when backup.offsite.enabled is true{hint}")
        return self


class BackupConfig(Strict):
    enabled: bool = True
    schedule: str = "0 2 * * *"  # nightly at 02:00 server time (§8.3)
    retention_days: int = Field(default=30, ge=1, le=3650)
    dir: str = "/opt/ai-meeting/backups"
    # The restore drill (README: Restore drills): weekly, Sunday 04:30; null turns it off.
    drill_schedule: str | None = "30 4 * * 0"
    offsite: OffsiteBackupConfig = OffsiteBackupConfig()

    @field_validator("schedule", "drill_schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not _CRON.match(v):
            raise ValueError(f"'{v}' is not a 5-field cron schedule like '0 2 * * *'")
        # cron refuses the whole file for a value out of its field's range ("0 25 * * *")
        for field, (name, low, high) in zip(v.split(" "), _CRON_RANGES):
            for part in field.split(","):
                span, _, step = part.partition("/")
                bounds = [int(n) for n in span.split("-")] if span != "*" else [low, high]
                if any(not low <= n <= high for n in bounds) or bounds[0] > bounds[-1] or (step and int(step) == 0):
                    raise ValueError(f"'{v}': {name} field '{field}' must be within {low}-{high} (ranges low-high, steps >= 1)")
        return v


_PROM_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")  # Prometheus durations: 15s, 1h30m


def _prom_duration(v: str, examples: str) -> str:
    if not _PROM_DURATION.match(v) or not re.search(r"[1-9]", v):
        raise ValueError(f"'{v}' is not a Prometheus duration like {examples}")
    return v


class AlertConfig(Strict):
    """Thresholds and `for:` durations of the alert rules (render/monitoring.py). Production
    defaults; a test may shorten the durations."""

    target_down_for: str = "2m"
    api_error_ratio: float = Field(default=0.05, gt=0, lt=1)  # share of API responses that are 5xx
    api_errors_for: str = "5m"
    disk_used_percent: int = Field(default=85, ge=1, le=99)
    disk_for: str = "10m"
    backup_max_age_hours: int = Field(default=26, ge=1, le=24 * 30)
    backup_for: str = "10m"
    # RestoreDrillTooOld / RestoreDrillMissing: the last good weekly drill older than this.
    restore_drill_max_age_days: int = Field(default=8, ge=1, le=90)
    certificate_min_days: int = Field(default=14, ge=1, le=365)
    certificate_for: str = "1h"

    @field_validator("target_down_for", "api_errors_for", "disk_for", "backup_for", "certificate_for")
    @classmethod
    def _duration(cls, v: str) -> str:
        if not _PROM_DURATION.match(v) or not re.search(r"[1-9]", v):
            raise ValueError(f"'{v}' is not a Prometheus duration like 30s, 2m or 1h")
        return v


_EMAIL = re.compile(r"^[^@\s,<>\"]+@[^@\s,<>\"]+\.[^@\s,<>\"]+$")
_SMARTHOST = re.compile(r"^(?P<host>[A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]):(?P<port>[0-9]{1,5})$")


def _check_email(v: str) -> str:
    if not _EMAIL.match(v):
        raise ValueError(f"'{v}' is not an e-mail address such as ops@example.com")
    return v


Email = Annotated[str, AfterValidator(_check_email)]


class AlertEmail(Strict):
    """Alertmanager's e-mail receiver (its smtp_* settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    to: list[Email] = Field(min_length=1)
    from_: Email = Field(alias="from")
    smarthost: str  # host:port of the mail relay, e.g. smtp.example.com:587
    auth_username: str | None = None
    auth_password: SecretStr | None = None  # set with `pulumi config set --secret`
    require_tls: bool = True  # STARTTLS before authenticating

    @field_validator("smarthost")
    @classmethod
    def _hostport(cls, v: str) -> str:
        m = _SMARTHOST.match(v)
        if not m or not 1 <= int(m.group("port")) <= 65535:
            raise ValueError(f"'{v}' must be host:port of the mail relay, e.g. smtp.example.com:587")
        return v

    @model_validator(mode="after")
    def _auth_pair(self) -> "AlertEmail":
        if (self.auth_username is None) != (self.auth_password is None):
            raise ValueError("monitoring.alertmanager.email.auth_password: auth_username and auth_password go together")
        return self


def _check_webhook(v: SecretStr) -> SecretStr:
    # The URL may carry a token: the message never repeats it.
    if not re.match(r"^https?://[^\s/]+(/\S*)?$", v.get_secret_value()):
        raise ValueError("must be an http:// or https:// URL")
    return v


class AlertmanagerConfig(Strict):
    """Alert delivery (README: Monitoring): Prometheus sends its alerts to Alertmanager, which
    groups them and notifies every receiver here, and again when they resolve."""

    enabled: bool = False
    port: Port = 9093  # published on 127.0.0.1 (UI, amtool, silences)
    # Webhook receivers (a chat bridge, an incident tool). Set with --secret when the URL holds a token.
    webhook_urls: list[Annotated[SecretStr, AfterValidator(_check_webhook)]] = Field(default_factory=list)
    email: AlertEmail | None = None
    group_wait: str = "30s"
    group_interval: str = "5m"
    repeat_interval: str = "4h"
    send_resolved: bool = True

    _duration = field_validator("group_wait", "group_interval", "repeat_interval")(
        lambda v: _prom_duration(v, "30s, 5m or 4h"))

    @model_validator(mode="after")
    def _receiver(self) -> "AlertmanagerConfig":
        if self.enabled and not self.webhook_urls and self.email is None:
            raise ValueError("monitoring.alertmanager.webhook_urls: enabled needs at least one receiver (webhook_urls or email)")
        return self


class MonitoringConfig(Strict):
    enabled: bool = False
    # Grafana is declared for real servers; false runs Prometheus and the exporters alone (this
    # machine has no Grafana image).
    grafana: bool = True
    grafana_port: Port = 3002
    prometheus_port: Port = 9091
    scrape_interval: str = "15s"
    evaluation_interval: str = "15s"
    retention: str = "15d"  # --storage.tsdb.retention.time
    alerts: AlertConfig = AlertConfig()
    alertmanager: AlertmanagerConfig = AlertmanagerConfig()

    _duration = field_validator("scrape_interval", "evaluation_interval", "retention")(
        lambda v: _prom_duration(v, "15s, 1m or 15d"))


class DockerDaemonConfig(Strict):
    """Keys the bootstrap sets in the servers' /etc/docker/daemon.json (issue #19). Other keys
    an operator keeps there are left alone. A change restarts dockerd (bootstrap step docker);
    with live-restore on, running containers keep running through it."""

    # null: on for a single server (target.kind ssh), off on Swarm nodes, where swarm mode
    # refuses it. true on a swarm is an error.
    live_restore: bool | None = None
    no_new_privileges: bool = True
    # null: off for a single server (published ports by iptables alone, checked by the prod
    # tests), left on for Swarm nodes (not verified there).
    userland_proxy: bool | None = None
    log_max_size: str = Field(default="20m", pattern=r"^[1-9][0-9]*[kmg]$")
    log_max_file: int = Field(default=5, ge=1, le=100)


class BootstrapConfig(Strict):
    """Server preparation over SSH (prod only): R1, R2, R3, R18."""

    preflight_mode: Literal["warn", "fail"] = "warn"
    min_cpus: int = Field(default=4, ge=1)
    min_memory_gb: int = Field(default=8, ge=1)
    min_disk_gb: int = Field(default=100, ge=1)
    allowed_tcp_ports: list[Port] = Field(default_factory=lambda: [22, 80, 443], min_length=1)
    # sshd's port on the server when it differs from target.port (NAT, a forwarded port).
    ssh_port: Port | None = None
    harden_ssh: bool = True
    docker: DockerDaemonConfig = DockerDaemonConfig()


class LoopbackPorts(Strict):
    """Host ports on 127.0.0.1 for operators (psql, redis-cli, the MinIO console through an
    SSH tunnel). null: don't publish. `api` is served by nginx (plain HTTP to all replicas):
    replicas publish no port, so a new one can start while the old one still runs."""

    postgres: Port | None = 5432
    redis: Port | None = 6379
    minio: Port | None = 9000
    minio_console: Port | None = 9001
    api: Port | None = 3000


class WebConfig(Strict):
    port: Port = 80  # the port the web image listens on inside its container


class Rotation(Strict):
    """Bump a number to generate a new value for that secret on the next `up` (README:
    Rotate a secret). The database password is then also changed inside PostgreSQL."""

    db_password: int = Field(default=0, ge=0)
    redis_password: int = Field(default=0, ge=0)
    minio_password: int = Field(default=0, ge=0)
    turn_password: int = Field(default=0, ge=0)
    jwt_secret: int = Field(default=0, ge=0)


class NginxConfig(Strict):
    worker_connections: int = Field(default=2048, ge=64, le=65535)
    client_max_body_size: str = Field(default="100M", pattern=r"^[1-9][0-9]*[kKmMgG]?$")
    http_port: Port = 80
    https_port: Port = 443
    # Address the public ports bind to. 0.0.0.0 on a server; 127.0.0.1 keeps a laptop private.
    bind_address: str = Field(default="0.0.0.0", pattern=r"^[0-9.]+$")


def _check_client_network(value: str) -> str:
    """An address or CIDR nginx's `geo` block takes, host bits clear (10.1.0.0/16, not 10.1.2.3/16)."""
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        hint = ""
        if "has host bits set" in str(exc):
            hint = f" (the network is {ipaddress.ip_network(value, strict=False)})"
        raise ValueError(
            f"'{value}' is not an IP address or network such as 203.0.113.7, 10.0.0.0/8 or 2001:db8::/32{hint}"
        ) from None
    return value


ClientNetwork = Annotated[str, AfterValidator(_check_client_network)]


class MaintenanceConfig(Strict):
    """Maintenance mode (README: Maintenance mode). On, nginx answers 503 with a small page and
    `Retry-After` for the site, /api/ and /ws/; the health endpoints keep answering, and clients
    in `allow` pass through as usual. `up` switches it by rewriting an included file and
    reloading nginx: no container is restarted."""

    enabled: bool = False
    # Client addresses or networks that still reach the site (the operator's office, a VPN).
    # nginx sees the client's own address on a server; on a laptop (docker-proxy) it sees the
    # Docker network's gateway.
    allow: list[ClientNetwork] = Field(default_factory=list, max_length=256)
    message: str = Field(
        default="AI Meeting is down for maintenance. Please try again shortly.", min_length=1, max_length=1000
    )
    retry_after: int = Field(default=600, ge=1, le=7 * 86400)  # seconds, sent as Retry-After

    @field_validator("allow")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dupes = sorted({a for a in v if v.count(a) > 1})
        if dupes:
            raise ValueError(f"{dupes} listed twice")
        return v


# --- the whole stack -------------------------------------------------------------------


class StackConfig(Strict):
    environment: Literal["dev", "staging", "prod"]
    target: Target = LocalTarget()
    domains: list[str] = Field(default_factory=lambda: ["localhost"], min_length=1)
    timezone: str = "Asia/Shanghai"
    install_dir: str = Field(default="/opt/ai-meeting", pattern=r"^/[A-Za-z0-9/_.-]+$")
    # Names of containers, the network and volumes: `<prefix>-postgres` etc.
    name_prefix: str = Field(default="ai-meeting", pattern=r"^[a-z][a-z0-9-]{1,30}$")
    tls: TlsConfig = TlsConfig()
    images: Images = Images()
    resources: Resources = Resources()
    hardening: Hardening = Hardening()
    api: ApiConfig = ApiConfig()
    app: AppSettings = AppSettings()
    database: DatabaseConfig = DatabaseConfig()
    redis: RedisConfig = RedisConfig()
    minio: MinioConfig = MinioConfig()
    smtp: SmtpConfig = SmtpConfig()
    webrtc: WebRtcConfig = WebRtcConfig()
    backup: BackupConfig = BackupConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    bootstrap: BootstrapConfig = BootstrapConfig()
    nginx: NginxConfig = NginxConfig()
    web: WebConfig = WebConfig()
    loopback_ports: LoopbackPorts = LoopbackPorts()
    rotation: Rotation = Rotation()
    maintenance: MaintenanceConfig = MaintenanceConfig()
    # Protect data volumes and secrets from `up`/`destroy` (default: on in prod).
    protect_data: bool | None = None
    # Allow a self-signed certificate in prod (an internal server with its own PKI, say).
    allow_self_signed_in_prod: bool = False

    @field_validator("domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        for d in v:
            _check_hostname(d)
        if len(set(v)) != len(v):
            raise ValueError("duplicate domain")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        if v not in available_timezones():
            raise ValueError(f"'{v}' is not an IANA time zone such as Asia/Shanghai or UTC")
        return v

    @model_validator(mode="after")
    def _environment_rules(self) -> "StackConfig":
        if self.environment == "prod":
            if self.tls.mode == "self-signed" and not self.allow_self_signed_in_prod:
                raise ValueError(
                    "tls.mode: prod needs letsencrypt or provided "
                    "(or set allow_self_signed_in_prod: true on purpose)"
                )
        if self.images.upload and self.target.kind not in ("ssh", "swarm"):
            raise ValueError("images.upload: copies images to a server; it needs target.kind ssh or swarm")
        if self.tls.mode == "letsencrypt":
            if self.target.kind == "local":
                raise ValueError("tls.mode: letsencrypt runs certbot on a server: it needs target.kind ssh or swarm "
                                 "(use self-signed for a local Docker)")
            if any(d == "localhost" for d in self.domains):
                raise ValueError("domains: Let's Encrypt cannot issue for localhost")
        if isinstance(self.target, SwarmTarget):
            self._swarm_rules()
        if isinstance(self.target, SshTarget) and self.target.user == "root" and self.bootstrap.harden_ssh:
            raise ValueError(
                "target.user: the bootstrap turns off root SSH login; connect as a sudo user such as 'deploy'"
            )
        if isinstance(self.target, SwarmTarget) and self.bootstrap.docker.live_restore:
            raise ValueError(
                "bootstrap.docker.live_restore: Docker refuses live-restore in swarm mode; leave it unset for a swarm"
            )
        if isinstance(self.target, SwarmTarget) and self.bootstrap.harden_ssh:
            for i, node in enumerate(self.target.nodes):
                if node.user == "root":
                    raise ValueError(
                        f"target.nodes[{i}].user: the bootstrap turns off root SSH login; connect as a sudo user such as 'deploy'"
                    )
        if self.backup.offsite.enabled and (self.target.kind == "local" or not self.backup.enabled):
            raise ValueError("backup.offsite.enabled: copies the server's backups off it; it needs backup.enabled "
                             "and target.kind ssh or swarm")
        if self.maintenance.enabled and isinstance(self.target, SwarmTarget):
            # Swarm's nginx reads an immutable Docker config: switching would roll every nginx task.
            raise ValueError("maintenance.enabled: not available on target.kind swarm yet (only local and ssh targets)")
        if self.database.upgrade == "dump-restore" and isinstance(self.target, SwarmTarget):
            raise ValueError("database.upgrade: dump-restore is not available on target.kind swarm yet (only local "
                             "and ssh targets); on a swarm, restore a backup into the new version (README: PostgreSQL major upgrade)")
        ports = {self.nginx.http_port, self.nginx.https_port}
        if len(ports) != 2:
            raise ValueError("nginx.https_port: must differ from nginx.http_port")
        published = [p for p in self.loopback_ports.model_dump().values() if p is not None]
        published += [self.nginx.http_port, self.nginx.https_port]
        if self.monitoring.enabled:
            published += [self.monitoring.prometheus_port]
            published += [self.monitoring.grafana_port] if self.monitoring.grafana else []
            published += [self.monitoring.alertmanager.port] if self.monitoring.alertmanager.enabled else []
        clashes = sorted({p for p in published if published.count(p) > 1})
        if clashes:
            raise ValueError(f"loopback_ports: host port(s) {clashes} are used twice")
        return self

    def _swarm_rules(self) -> None:
        """What a swarm cannot honour is refused here, naming the key, never silently dropped."""
        set_ports = sorted(k for k in self.loopback_ports.model_fields_set if getattr(self.loopback_ports, k) is not None)
        if set_ports:
            raise ValueError(
                f"loopback_ports.{set_ports[0]}: a swarm publishes no port on 127.0.0.1 (a published port is host-wide "
                "on every node); remove it and reach the service through an SSH tunnel to a node (README: Docker Swarm)"
            )
        if "bind_address" in self.nginx.model_fields_set and self.nginx.bind_address != "0.0.0.0":
            raise ValueError("nginx.bind_address: on a swarm nginx publishes 80/443 in host mode on every address of the edge nodes")
        mon = self.monitoring
        if mon.enabled and mon.grafana:
            raise ValueError("monitoring.grafana: Grafana is not deployed on a swarm; set monitoring.grafana: false "
                             "(Prometheus, the exporters and the alert rules are)")
        if mon.enabled and "prometheus_port" in mon.model_fields_set:
            raise ValueError("monitoring.prometheus_port: a swarm publishes no port on 127.0.0.1; Prometheus answers "
                             "on the overlay network as prometheus:9090 (README: Docker Swarm)")
        for service, hardening in self.hardening:
            if "pids_limit" in hardening.model_fields_set:
                raise ValueError(
                    f"hardening.{service}.pids_limit: a swarm cannot apply a pids limit (pulumi-docker's Service has "
                    "no such setting, and one set beside it would restart every task again); remove it (README: Hardening)"
                )
        if self.backup.enabled:
            data = next(n for n in self.target.nodes if n.labels.get(DATA_LABEL) == "true")  # type: ignore[union-attr]
            if data.role != "manager":
                raise ValueError(
                    f"backup.enabled: backups run on the data node ({data.host}), which must be a manager so the "
                    "restore can scale services down; make it a manager or set backup.enabled: false"
                )

    # Derived settings: one place decides them, components only read.
    @property
    def protect(self) -> bool:
        return self.environment == "prod" if self.protect_data is None else self.protect_data

    @property
    def canonical_domain(self) -> str:
        return self.domains[0]

    @property
    def is_remote(self) -> bool:
        return self.target.kind == "ssh"

    def container_name(self, service: str) -> str:
        return f"{self.name_prefix}-{service}"
