"""Every service of the stack, defined once (components/definition.py).

Each function takes a small frozen `*Args` of just what it uses (the config model's own
sub-models where they fit) and returns a target-neutral `ServiceDefinition`; the one-server
and Swarm backends turn it into resources. The scripts the stack runs against its services
(password sync, bucket creation, migrations, the post-deploy check) are here too, written once
and run by either target's shell.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Mapping, Sequence

import pulumi

from config.model import (
    ApiConfig,
    DatabaseConfig,
    Limits,
    MinioConfig,
    MinioHardening,
    NginxHardening,
    PostgresHardening,
    RedisConfig,
    RedisHardening,
    ServiceHardening,
    WebHardening,
)
from render.postgres import render_init_sql, render_postgres_args
from render.redis import RedisSettings, render_redis_command

from .definition import LABEL_NAME, DataVolume, File, FileSecret, HostDir, Privileges, Probe, ServiceDefinition, http_probe

POSTGRES_PORT = 5432
REDIS_PORT = 6379
MINIO_PORT = 9000
MINIO_CONSOLE_PORT = 9001
CERT_DIR_IN_NGINX = "/etc/nginx/ssl"
SECRETS_DIR = "/run/secrets"


def _published(host_port: int | None, internal: int) -> list[tuple[int, int]]:
    return [] if host_port is None else [(internal, host_port)]


# The uid:gid the official postgres and redis images (and ours) give their user: the data
# directories belong to it, so the server runs as it from the start, with no capability.
IMAGE_DATA_USER = "999:999"


def privileges(h: ServiceHardening, *, tmpfs: tuple[str, ...] = ("/tmp",), spool: tuple[str, ...] = (),
               low_ports: bool = False) -> Privileges:
    """The config's hardening of a service, with where its image writes (image facts)."""
    # Named as the engine reads them back (CAP_CHOWN): a bare CHOWN would show as drift on refresh.
    return Privileges(read_only_root=h.read_only_root, cap_add=tuple(f"CAP_{c}" for c in h.cap_add), pids_limit=h.pids_limit,
                      tmpfs=tmpfs, spool=spool, low_ports=low_ports)


# --- PostgreSQL (R7, R19) ----------------------------------------------------------------


@dataclass(frozen=True)
class PostgresArgs:
    image: pulumi.Input[str]
    limits: Limits
    database: DatabaseConfig
    timezone: str
    password: pulumi.Output[str]
    loopback_port: int | None = None
    hardening: ServiceHardening = PostgresHardening()


# The volume's mount point, and PGDATA's directory in it: a major upgrade moves that directory
# aside (pgdata-<old major>) in the same volume (render/postgres_upgrade.py).
POSTGRES_DATA = "/var/lib/postgresql/data"
PGDATA_SUBDIR = "pgdata"


def postgres_command(timezone: str) -> list[str]:
    """pg_stat_statements for slow-query analysis (§10, R19) and slow statements logged."""
    return render_postgres_args({"log_min_duration_statement": "1000", "timezone": timezone, "log_timezone": timezone})


def postgres(a: PostgresArgs) -> ServiceDefinition:
    db = a.database
    return ServiceDefinition(
        service="postgres",
        role="data",
        image=a.image,
        limits=a.limits,
        command=postgres_command(a.timezone),
        env={"POSTGRES_DB": db.name, "POSTGRES_USER": db.user, "PGDATA": f"{POSTGRES_DATA}/{PGDATA_SUBDIR}", "TZ": a.timezone},
        file_secrets=[FileSecret("POSTGRES_PASSWORD", "db_password", a.password)],
        files=[File("/docker-entrypoint-initdb.d/00-init.sql", render_init_sql(db.name, a.timezone))],
        volumes=[DataVolume("postgres", POSTGRES_DATA)],
        loopback_ports=_published(a.loopback_port, POSTGRES_PORT),
        probe=Probe(test=("CMD-SHELL", f"pg_isready -U {db.user} -d {db.name} -h 127.0.0.1"), start_period="30s"),
        start_timeout=300,  # the first start runs initdb and the init SQL
        user=IMAGE_DATA_USER,
        privileges=privileges(a.hardening, tmpfs=("/tmp", "/var/run/postgresql")),
    )


# Run by `sh` inside the postgres container: the role's password becomes the generated one.
# The password comes from the container itself (POSTGRES_PASSWORD on one server, the docker
# secret POSTGRES_PASSWORD_FILE on a swarm), is quoted by the shell's builtins and reaches psql
# on stdin: it is on no command line, in no script text and not in Pulumi's state.
PASSWORD_SYNC_SH = r"""set -eu
pw=${POSTGRES_PASSWORD:-}
[ -n "$pw" ] || pw=$(cat "$POSTGRES_PASSWORD_FILE")
q="'"
quoted=$(printf '%s' "$pw" | sed "s/$q/$q$q/g")
printf 'ALTER ROLE "%s" WITH PASSWORD %s%s%s;\n' "$POSTGRES_USER" "$q" "$quoted" "$q" |
  psql -v ON_ERROR_STOP=1 -q -U "$POSTGRES_USER" -d "$POSTGRES_DB"
"""


# --- Redis (R8, R19) ---------------------------------------------------------------------


@dataclass(frozen=True)
class RedisArgs:
    image: pulumi.Input[str]
    limits: Limits
    redis: RedisConfig
    timezone: str
    password: pulumi.Output[str]
    loopback_port: int | None = None
    hardening: ServiceHardening = RedisHardening()


def redis(a: RedisArgs) -> ServiceDefinition:
    r = a.redis
    settings = RedisSettings(maxmemory=r.maxmemory, maxmemory_policy=r.maxmemory_policy, appendonly=r.appendonly)
    return ServiceDefinition(
        service="redis",
        role="data",
        image=a.image,
        limits=a.limits,
        # The password reaches redis-server as a config line on stdin, never argv (`ps`);
        # REDISCLI_AUTH lets redis-cli (healthcheck, backups) authenticate. The image reads no
        # _FILE setting, so on a swarm too it is in the (secret) environment.
        command=render_redis_command(settings),
        env={"TZ": a.timezone},
        secret_env=pulumi.Output.secret(a.password).apply(lambda pw: {"REDIS_PASSWORD": pw, "REDISCLI_AUTH": pw}),
        volumes=[DataVolume("redis", "/data")],
        loopback_ports=_published(a.loopback_port, REDIS_PORT),
        # `PING` rather than the plan's `INCR ping`, which writes a key every check.
        probe=Probe(test=("CMD-SHELL", "redis-cli ping | grep -q PONG")),
        user=IMAGE_DATA_USER,
        privileges=privileges(a.hardening),
    )


# --- MinIO (R9) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MinioArgs:
    image: pulumi.Input[str]
    limits: Limits
    minio: MinioConfig
    timezone: str
    password: pulumi.Output[str]
    loopback_port: int | None = None
    loopback_console_port: int | None = None
    hardening: ServiceHardening = MinioHardening()


def minio(a: MinioArgs) -> ServiceDefinition:
    console = a.minio.console
    return ServiceDefinition(
        service="minio",
        role="data",
        image=a.image,
        limits=a.limits,
        command=["server", "/data", *(["--console-address", f":{MINIO_CONSOLE_PORT}"] if console else [])],
        env={"MINIO_ROOT_USER": a.minio.root_user, "TZ": a.timezone},
        file_secrets=[FileSecret("MINIO_ROOT_PASSWORD", "minio_password", a.password)],
        volumes=[DataVolume("minio", "/data")],
        loopback_ports=_published(a.loopback_port, MINIO_PORT)
        + (_published(a.loopback_console_port, MINIO_CONSOLE_PORT) if console else []),
        # Newer official images ship no curl; `mc ready` is their own liveness probe.
        probe=Probe(
            test=("CMD-SHELL", "curl -fsS http://127.0.0.1:9000/minio/health/live || mc ready local"), timeout="10s"
        ),
        # Root (its data volume is root's), without any capability; mc keeps its aliases in ~/.mc.
        privileges=privileges(a.hardening, tmpfs=("/tmp", "/root/.mc")),
    )


def bucket_sh(bucket: str) -> str:
    """Run by `sh` in the MinIO container: the bucket exists. Credentials come from the
    container itself (env on one server, a secret file on a swarm): no command line holds them."""
    return (
        'pw=${MINIO_ROOT_PASSWORD:-}; [ -n "$pw" ] || pw=$(cat "$MINIO_ROOT_PASSWORD_FILE")\n'
        'mc alias set local http://127.0.0.1:9000 "$MINIO_ROOT_USER" "$pw" >/dev/null\n'
        f"mc mb --ignore-existing local/{bucket}\n"
    )


# --- API (R5, R10, R14, R15, R20) --------------------------------------------------------


@dataclass(frozen=True)
class ApiArgs:
    image: pulumi.Input[str]
    limits: Limits
    api: ApiConfig
    environment: pulumi.Output[Mapping[str, str]]  # the plan's .env (api_environment), secret
    log_dir: str | None = None  # servers: <install_dir>/logs/app (the plan's ./logs/app)
    hardening: ServiceHardening = ServiceHardening()


def api_probe(port: int, health_path: str, start_period: int = 20) -> Probe:
    # A release that never answers is unhealthy after 20 s + 15 x 2 s (+ one probe's timeout).
    return http_probe(f"http://127.0.0.1:{port}{health_path}", retries=15, start_period=f"{start_period}s")


def api(a: ApiArgs) -> ServiceDefinition:
    return ServiceDefinition(
        service="api",
        role="app",
        image=a.image,
        limits=a.limits,
        secret_env=pulumi.Output.secret(a.environment),
        host_dirs=[HostDir(a.log_dir, "/app/logs")] if a.log_dir else [],
        replicas=a.api.replicas,
        probe=api_probe(a.api.port, a.api.health_path, a.api.start_period),
        start_timeout=a.api.start_timeout,
        fail_when_unhealthy=True,
        privileges=privileges(a.hardening),  # the image's USER (app, uid 10001)
    )


def migrate_script(docker_cli: str, network: str, image: str, migrate_command: Sequence[str]) -> str:
    """§7.2 on a swarm: the migrations in a throwaway container of the API image on the overlay
    network, before any task of the new release starts (a replica may run on any node, so they
    cannot be exec'd into from one place). Its environment (with the database password) comes
    over stdin into a 0600 file, never argv. One server runs the same command inside its first
    new replica instead (components/api.py): no secret input, so saved plans apply."""
    return (
        "set -euo pipefail\numask 077\nf=$(mktemp)\ntrap 'rm -f \"$f\"' EXIT\ncat > \"$f\"\n"
        f"{docker_cli} run --rm --network {shlex.quote(network)} --env-file \"$f\" {shlex.quote(image)} {shlex.join(migrate_command)}"
    )


def env_file(env: Mapping[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in env.items())


# --- web (R11) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WebArgs:
    image: pulumi.Input[str]
    limits: Limits
    port: int
    timezone: str
    replicas: int = 1
    hardening: ServiceHardening = WebHardening()


def web(a: WebArgs) -> ServiceDefinition:
    return ServiceDefinition(
        service="web",
        role="app",
        image=a.image,
        limits=a.limits,
        env={"TZ": a.timezone},
        replicas=a.replicas,
        probe=http_probe(f"http://127.0.0.1:{a.port}/"),
        # The image's USER (nginx), writing only to /tmp (images/web); port 80 through
        # LOW_PORTS_SYSCTL, not a capability.
        privileges=privileges(a.hardening, low_ports=True),
    )


# --- nginx (R12, R13, R20) -----------------------------------------------------------------


@dataclass(frozen=True)
class NginxArgs:
    image: pulumi.Input[str]
    limits: Limits
    timezone: str
    conf: str  # rendered nginx.conf (render/nginx.py)
    http_port: int
    https_port: int
    certificate_pem: pulumi.Input[str] | None  # None: mounted from cert_dir (Let's Encrypt)
    private_key_pem: pulumi.Input[str] | None
    cert_dir: str | None = None
    acme_webroot: str | None = None
    log_dir: str | None = None
    extra_host_dirs: Sequence[HostDir] = ()
    loopback_ports: Sequence[tuple[int, int]] = ()
    replicas: int = 1
    hardening: ServiceHardening = NginxHardening()


def nginx(a: NginxArgs) -> ServiceDefinition:
    files = [File("/etc/nginx/nginx.conf", a.conf)]
    if a.certificate_pem is not None and a.private_key_pem is not None:
        files += [
            File(f"{CERT_DIR_IN_NGINX}/fullchain.pem", a.certificate_pem, 0o644, secret=True),
            File(f"{CERT_DIR_IN_NGINX}/privkey.pem", a.private_key_pem, 0o600, secret=True),
        ]
    host_dirs = list(a.extra_host_dirs)
    if a.cert_dir:
        host_dirs.append(HostDir(a.cert_dir, CERT_DIR_IN_NGINX, read_only=True))
    if a.acme_webroot:
        host_dirs.append(HostDir(a.acme_webroot, "/var/www/acme", read_only=True))
    if a.log_dir:
        host_dirs.append(HostDir(a.log_dir, "/var/log/nginx"))
    return ServiceDefinition(
        service="nginx",
        role="edge",
        image=a.image,
        limits=a.limits,
        env={"TZ": a.timezone},
        files=files,
        host_dirs=host_dirs,
        public_ports=[(80, a.http_port), (443, a.https_port)],
        loopback_ports=list(a.loopback_ports),
        replicas=a.replicas,
        probe=http_probe("https://127.0.0.1/health", insecure=True),
        # Request bodies (up to client_max_body_size) and proxy buffers spill to disk, not memory.
        privileges=privileges(a.hardening, tmpfs=("/tmp", "/run"), spool=("/var/lib/nginx", "/var/cache/nginx")),
    )


def verify_script(host: str, port: int, *, diagnose: str = "") -> str:
    """§7.3 after every deploy, from a host nginx listens on: /health and /api/health through
    nginx. Retries for up to 2 min (nginx may still be reloading, a task still starting)."""
    base = f"https://{host}:{port}"
    resolve = f"--resolve {host}:{port}:127.0.0.1"
    checks = " && ".join(f"curl -fsS -k --max-time 5 {resolve} {base}{p} >/dev/null" for p in ("/health", "/api/health"))
    return (
        "set -euo pipefail\n"
        f"for i in $(seq 1 60); do if {checks}; then echo 'verified: /health and /api/health answer'; exit 0; fi; sleep 2; done\n"
        f"echo 'post-deploy check failed: {base}/health or /api/health does not answer through nginx' >&2\n"
        + (f"{diagnose} >&2 || true\n" if diagnose else "")
        + "exit 1"
    )


# --- running a script inside a service's container, on either target ----------------------


def container_of(docker_cli: str, name: str) -> str:
    """Shell that prints the running container of service `<prefix>-<svc>` on this engine."""
    return f"{docker_cli} ps -q -f label={LABEL_NAME}={name} -f status=running | head -n1"


def exec_in_service(docker_cli: str, name: str, inner_sh: str, wait_s: int = 120) -> tuple[str, str]:
    """(script, stdin): run `inner_sh` with `sh -s` in the service's running container (waiting
    up to `wait_s` for a swarm task to start). The inner script goes over stdin."""
    script = (
        "set -euo pipefail\n"
        f"for _ in $(seq 1 {wait_s // 2}); do c=$({container_of(docker_cli, name)}); [ -n \"$c\" ] && break; sleep 2; done\n"
        f'[ -n "$c" ] || {{ echo "no running container of {name} on this host" >&2; exit 1; }}\n'
        f'{docker_cli} exec -i "$c" sh -s'
    )
    return script, inner_sh


# --- monitoring (R17, plan §9) -------------------------------------------------------------


@dataclass(frozen=True)
class MonitoringArgs:
    limits: Limits
    prometheus_image: pulumi.Input[str]
    node_exporter_image: pulumi.Input[str]
    blackbox_exporter_image: pulumi.Input[str]
    prometheus_yml: str
    alert_rules_yml: str
    blackbox_yml: str
    retention: str
    prometheus_port: int | None  # 127.0.0.1:<port> on one server; None: not published
    textfile_dir: str | None  # servers: <install_dir>/metrics, where backups write their metric
    alertmanager_image: pulumi.Input[str] | None = None  # None: monitoring.alertmanager off
    alertmanager_yml: pulumi.Input[str] | None = None  # secret (receivers' credentials)
    alertmanager_port: int | None = None
    hardening: ServiceHardening = ServiceHardening()


def _http_check(url: str, **kw: object) -> Probe:
    # The official images have busybox wget, the local ones curl.
    return Probe(test=("CMD-SHELL", f"wget -qO /dev/null {url} || curl -fsS -o /dev/null {url}"), **kw)  # type: ignore[arg-type]


def node_exporter(a: MonitoringArgs) -> ServiceDefinition:
    textfile = ["--collector.textfile.directory=/textfile"] if a.textfile_dir else []
    return ServiceDefinition(
        service="node-exporter",
        role="ops",
        every_node=True,
        image=a.node_exporter_image,
        limits=a.limits,
        # The host's filesystems, read-only: disk usage of the machine, not of the container.
        command=["--path.rootfs=/host", "--web.listen-address=:9100", *textfile],
        host_dirs=[HostDir("/", "/host", read_only=True),
                   *([HostDir(a.textfile_dir, "/textfile", read_only=True)] if a.textfile_dir else [])],
        probe=_http_check("http://127.0.0.1:9100/metrics"),
        privileges=privileges(a.hardening),
    )


def blackbox_exporter(a: MonitoringArgs) -> ServiceDefinition:
    return ServiceDefinition(
        service="blackbox-exporter",
        role="ops",
        image=a.blackbox_exporter_image,
        limits=a.limits,
        command=["--config.file=/etc/blackbox_exporter/config.yml"],
        files=[File("/etc/blackbox_exporter/config.yml", a.blackbox_yml)],
        probe=_http_check("http://127.0.0.1:9115/-/healthy"),
        privileges=privileges(a.hardening),
    )


PROMETHEUS_RULES_PATH = "/etc/prometheus/alert-rules.yml"


def prometheus(a: MonitoringArgs) -> ServiceDefinition:
    return ServiceDefinition(
        service="prometheus",
        role="ops",
        image=a.prometheus_image,
        limits=a.limits,
        command=["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
                 f"--storage.tsdb.retention.time={a.retention}"],
        # Metrics survive a replaced container (new rules, new image); not backed up.
        volumes=[DataVolume("prometheus", "/prometheus")],
        files=[File("/etc/prometheus/prometheus.yml", a.prometheus_yml), File(PROMETHEUS_RULES_PATH, a.alert_rules_yml)],
        loopback_ports=_published(a.prometheus_port, 9090),
        probe=_http_check("http://127.0.0.1:9090/-/ready"),
        privileges=privileges(a.hardening),
    )


ALERTMANAGER_CONFIG_PATH = "/etc/alertmanager/alertmanager.yml"


def alertmanager(a: MonitoringArgs) -> ServiceDefinition:
    assert a.alertmanager_image is not None and a.alertmanager_yml is not None
    return ServiceDefinition(
        service="alertmanager",
        role="ops",
        image=a.alertmanager_image,
        limits=a.limits,
        command=[f"--config.file={ALERTMANAGER_CONFIG_PATH}", "--storage.path=/alertmanager"],
        # Silences and the notification log survive a replaced container.
        volumes=[DataVolume("alertmanager", "/alertmanager")],
        files=[File(ALERTMANAGER_CONFIG_PATH, a.alertmanager_yml, 0o644, secret=True)],
        loopback_ports=_published(a.alertmanager_port, 9093),
        probe=_http_check("http://127.0.0.1:9093/-/ready"),
        privileges=privileges(a.hardening),
    )


@dataclass(frozen=True)
class GrafanaArgs:
    image: pulumi.Input[str]
    limits: Limits
    admin_password: pulumi.Output[str]
    files: Sequence[File]  # provisioning (data source, dashboards)
    port: int | None
    hardening: ServiceHardening = ServiceHardening()


def grafana(a: GrafanaArgs) -> ServiceDefinition:
    return ServiceDefinition(
        service="grafana",
        role="ops",
        image=a.image,
        limits=a.limits,
        env={"GF_SECURITY_ADMIN_USER": "admin", "GF_USERS_ALLOW_SIGN_UP": "false"},
        file_secrets=[FileSecret("GF_SECURITY_ADMIN_PASSWORD", "grafana_admin_password", a.admin_password)],
        files=list(a.files),
        loopback_ports=_published(a.port, 3000),
        probe=_http_check("http://127.0.0.1:3000/api/health", start_period="30s"),
        privileges=privileges(a.hardening, spool=("/var/lib/grafana",)),
    )
