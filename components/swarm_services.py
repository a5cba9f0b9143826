"""The AI Meeting stack as Docker Swarm services (target.kind swarm).

- API and web: replicated, spread over the nodes by the scheduler, rolled out start-first
  and rolled back by Swarm itself when the new tasks fail their healthchecks.
- postgres, redis, minio: one task each, pinned by a placement constraint to the node
  labelled `ai-meeting.data=true`; their named volumes are created there by that node's
  engine, so a task never starts elsewhere on an empty volume.
- nginx: one task on each edge node (`ai-meeting.edge=true`), 80/443 published in host mode.

Endpoint mode is dnsrr everywhere: a service's name resolves to its tasks' addresses on the
overlay network. The VIP mode and the ingress routing mesh need IPVS in the kernel, which
many hosts (and this test machine) lack; nginx re-resolves the names through Docker's DNS
(render/nginx.py: dns_resolver) and publishes its own ports in host mode, which works with
or without IPVS.

Secrets are docker.Secret files under /run/secrets where the image reads a file (postgres
`POSTGRES_PASSWORD_FILE`, minio `MINIO_ROOT_PASSWORD_FILE`, redis's config file, nginx's TLS
key); the API image reads only environment variables, so its settings stay environment.
"""

from __future__ import annotations

import base64
import dataclasses
import shlex

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from config.model import DATA_LABEL, EDGE_LABEL, Limits, StackConfig, SwarmTarget
from render.nginx import render_nginx_conf
from render.postgres import render_init_sql
from render.redis import render_redis_args

from .api import ApiSecrets, api_environment
from .datastores import postgres_command, redis_settings
from .proxy import nginx_site
from .secrets import Secrets
from .tls import CERT_DIR_IN_NGINX, TlsMaterial

SECRETS_DIR = "/run/secrets"
ON_DATA_NODE = f"node.labels.{DATA_LABEL}==true"
ON_EDGE_NODES = f"node.labels.{EDGE_LABEL}==true"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def redis_conf(password: str) -> str:
    """Redis reads its password from this config file (a docker secret), not argv or env."""
    escaped = password.replace("\\", "\\\\").replace('"', '\\"')
    return f'requirepass "{escaped}"\n'


def _limits(limits: Limits) -> docker.ServiceTaskSpecResourcesArgs:
    return docker.ServiceTaskSpecResourcesArgs(
        limits=docker.ServiceTaskSpecResourcesLimitsArgs(
            nano_cpus=round(limits.cpus * 1_000_000_000), memory_bytes=limits.memory_mb * 1024 * 1024
        )
    )


def _health(test: list[str], start_period: str = "10s", retries: int = 15) -> docker.ServiceTaskSpecContainerSpecHealthcheckArgs:
    return docker.ServiceTaskSpecContainerSpecHealthcheckArgs(
        tests=test, interval="2s", timeout="5s", retries=retries, start_period=start_period
    )


def _http_check(url: str, insecure: bool = False) -> list[str]:
    k, nk = ("-k", "--no-check-certificate ") if insecure else ("", "")
    return ["CMD-SHELL", f"curl -fsS {k} {url} >/dev/null || wget -q {nk}-O /dev/null {url}"]


@dataclasses.dataclass(frozen=True)
class SwarmSite:
    """Where the services go: the swarm (provider at a manager) and the overlay network."""

    cfg: StackConfig
    provider: docker.Provider
    network: pulumi.Input[str]

    def opts(self, parent: pulumi.Resource, depends_on: list[pulumi.Resource] | None = None, **kw: object) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=parent, provider=self.provider, depends_on=depends_on or [], **kw)


def swarm_service(
    resource_name: str,
    site: SwarmSite,
    *,
    service: str,
    image: str,
    limits: Limits,
    health: docker.ServiceTaskSpecContainerSpecHealthcheckArgs,
    parent: pulumi.Resource,
    replicas: int = 1,
    constraints: list[str] | None = None,
    max_per_node: int | None = None,
    env: pulumi.Input[dict[str, str]] | None = None,
    args: list[str] | None = None,
    commands: list[str] | None = None,
    mounts: list[docker.ServiceTaskSpecContainerSpecMountArgs] | None = None,
    secrets: list[docker.ServiceTaskSpecContainerSpecSecretArgs] | None = None,
    configs: list[docker.ServiceTaskSpecContainerSpecConfigArgs] | None = None,
    ports: list[docker.ServiceEndpointSpecPortArgs] | None = None,
    stateless: bool = True,
    converge_timeout: int = 300,
    depends_on: list[pulumi.Resource] | None = None,
) -> docker.Service:
    """What every service has: limits, healthcheck, restart policy, rotated logs, labels, the
    overlay network, dnsrr, and an update that Swarm rolls back on its own when it fails.
    Stateless services start the new task before stopping the old one; a stateful one (a
    single task on its volume) and anything with host ports must stop first."""
    name = f"{site.cfg.name_prefix}-{service}"
    order = "start-first" if stateless and not ports else "stop-first"
    update = dict(parallelism=1, delay="2s", failure_action="rollback", monitor="15s", max_failure_ratio="0.0", order=order)
    return docker.Service(
        resource_name,
        name=name,
        labels=[
            docker.ServiceLabelArgs(label="ai-meeting.service", value=service),
            docker.ServiceLabelArgs(label="ai-meeting.stack", value=pulumi.get_stack()),
        ],
        task_spec=docker.ServiceTaskSpecArgs(
            container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                image=image,
                env=env,
                args=args,
                commands=commands,
                healthcheck=health,
                mounts=mounts,
                secrets=secrets,
                configs=configs,
                stop_grace_period="30s",  # a clean shutdown (Postgres checkpoint, Redis AOF)
                labels=[docker.ServiceTaskSpecContainerSpecLabelArgs(label="ai-meeting.service", value=service)],
            ),
            resources=_limits(limits),
            restart_policy=docker.ServiceTaskSpecRestartPolicyArgs(condition="any", delay="2s", window="30s"),
            placement=docker.ServiceTaskSpecPlacementArgs(constraints=constraints, max_replicas=max_per_node) if constraints else None,
            networks_advanceds=[docker.ServiceTaskSpecNetworksAdvancedArgs(name=site.network, aliases=[service])],
            log_driver=docker.ServiceTaskSpecLogDriverArgs(name="json-file", options={"max-size": "20m", "max-file": "5"}),
        ),
        mode=docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=replicas)),
        update_config=docker.ServiceUpdateConfigArgs(**update),
        rollback_config=docker.ServiceRollbackConfigArgs(**{**update, "failure_action": "pause"}),
        endpoint_spec=docker.ServiceEndpointSpecArgs(mode="dnsrr", ports=ports),
        # `up` waits until every task runs (and is healthy), so a release that fails its
        # healthchecks fails the `up`, after Swarm has rolled it back.
        converge_config=docker.ServiceConvergeConfigArgs(delay="2s", timeout=f"{converge_timeout}s"),
        opts=site.opts(parent, depends_on),
    )


def _secret(name: str, site: SwarmSite, data: pulumi.Input[str], parent: pulumi.Resource) -> docker.Secret:
    # Auto-named: a secret cannot change in place, and a new value must exist beside the old
    # one until the services have moved to it (create before delete).
    return docker.Secret(
        name,
        data=pulumi.Output.secret(pulumi.Output.from_input(data).apply(b64)),
        labels=[docker.SecretLabelArgs(label="ai-meeting.stack", value=pulumi.get_stack())],
        opts=site.opts(parent),
    )


def _mount_secret(secret: docker.Secret, file_name: str, mode: int = 0o400, uid: str = "0") -> docker.ServiceTaskSpecContainerSpecSecretArgs:
    return docker.ServiceTaskSpecContainerSpecSecretArgs(
        secret_id=secret.id, secret_name=secret.name, file_name=file_name, file_mode=mode, file_uid=uid, file_gid="0"
    )


def _config(name: str, site: SwarmSite, text: str, parent: pulumi.Resource) -> docker.ServiceConfig:
    return docker.ServiceConfig(name, data=b64(text), opts=site.opts(parent))


def _mount_config(config: docker.ServiceConfig, file_name: str) -> docker.ServiceTaskSpecContainerSpecConfigArgs:
    return docker.ServiceTaskSpecContainerSpecConfigArgs(
        config_id=config.id, config_name=config.name, file_name=file_name, file_mode=0o444
    )


def _volume(name: str, target: str) -> docker.ServiceTaskSpecContainerSpecMountArgs:
    # A named volume on the node the task runs on (the data node): created by that engine on
    # first start, never removed by Pulumi (destroy leaves the data; README: Docker Swarm).
    return docker.ServiceTaskSpecContainerSpecMountArgs(type="volume", source=name, target=target)


def _manager_sh(name: str, script: pulumi.Input[str], conn: command.remote.ConnectionArgs, parent: pulumi.Resource,
                triggers: list[pulumi.Input[object]], depends_on: list[pulumi.Resource], stdin: pulumi.Input[str] | None = None) -> command.remote.Command:
    return command.remote.Command(
        name,
        connection=conn,
        create=pulumi.Output.from_input(script).apply(lambda s: f"sudo -n bash -c {shlex.quote(s)}"),
        stdin=stdin,
        triggers=triggers,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=depends_on),
    )


def task_exec_script(service: str, inner: str) -> str:
    """Run `inner` (sh) in the running task of a single-task service on this node."""
    return (
        "set -euo pipefail\n"
        f"for _ in $(seq 1 60); do c=$(docker ps -q -f label=com.docker.swarm.service.name={service} | head -n1); "
        '[ -n "$c" ] && break; sleep 2; done\n'
        f'[ -n "$c" ] || {{ echo "no running task of {service} on this node" >&2; exit 1; }}\n'
        f'docker exec "$c" sh -c {shlex.quote(inner)}'
    )


def migrate_script(network: str, image: str, migrate_command: list[str]) -> str:
    """§7.2: migrations in a throwaway API container on the overlay network (attachable); its
    environment (with the database password) comes over stdin into a 0600 file, not argv."""
    return (
        "set -euo pipefail\numask 077\nf=$(mktemp)\ntrap 'rm -f \"$f\"' EXIT\ncat > \"$f\"\n"
        f"docker run --rm --network {shlex.quote(network)} --env-file \"$f\" {shlex.quote(image)} {shlex.join(migrate_command)}"
    )


def verify_script(cfg: StackConfig) -> str:
    """§7.3 on every edge node: /health and /api/health through its nginx (host-mode ports)."""
    host, port = cfg.canonical_domain, cfg.nginx.https_port
    base = f"https://{host}:{port}"
    resolve = f"--resolve {host}:{port}:127.0.0.1"
    checks = " && ".join(f"curl -fsS -k --max-time 5 {resolve} {base}{p} >/dev/null" for p in ("/health", "/api/health"))
    return (
        "set -euo pipefail\n"
        f"for i in $(seq 1 60); do if {checks}; then echo 'verified: /health and /api/health answer'; exit 0; fi; sleep 2; done\n"
        "echo 'post-deploy check failed: /health or /api/health does not answer through nginx' >&2\nexit 1"
    )


class SwarmServices(pulumi.ComponentResource):
    api: docker.Service
    web: docker.Service
    nginx: docker.Service
    postgres: docker.Service
    redis: docker.Service
    minio: docker.Service
    network: docker.Network

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        provider: docker.Provider,
        secrets: Secrets,
        tls_material: TlsMaterial,
        manager: command.remote.ConnectionArgs,
        data_node: command.remote.ConnectionArgs,
        edge_nodes: list[tuple[str, command.remote.ConnectionArgs]],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("ai-meeting:swarm:Services", name, None, opts)
        target = cfg.target
        assert isinstance(target, SwarmTarget)
        prefix = cfg.name_prefix
        self.network = docker.Network(
            "network",
            name=f"{prefix}-network",
            driver="overlay",
            attachable=True,  # the one-shot migration container joins it
            labels=[docker.NetworkLabelArgs(label="ai-meeting.stack", value=pulumi.get_stack())],
            opts=pulumi.ResourceOptions(parent=self, provider=provider),
        )
        site = SwarmSite(cfg, provider, self.network.name)
        db = cfg.database
        data = [ON_DATA_NODE]

        # --- data services: pinned to the data node with their volumes --------------------
        db_pw = _secret("db-password", site, secrets.db_password, self)
        init_sql = _config("postgres-init", site, render_init_sql(db.name, cfg.timezone), self)
        self.postgres = swarm_service(
            "postgres", site, service="postgres", image=cfg.images.postgres, limits=cfg.resources.postgres,
            parent=self, constraints=data, stateless=False,
            env={"POSTGRES_DB": db.name, "POSTGRES_USER": db.user, "POSTGRES_PASSWORD_FILE": f"{SECRETS_DIR}/db_password",
                 "PGDATA": "/var/lib/postgresql/data/pgdata", "TZ": cfg.timezone},
            args=postgres_command(cfg)[1:],
            mounts=[_volume(f"{prefix}-postgres-data", "/var/lib/postgresql/data")],
            secrets=[_mount_secret(db_pw, "db_password", 0o444)],
            configs=[_mount_config(init_sql, "/docker-entrypoint-initdb.d/00-init.sql")],
            health=_health(["CMD-SHELL", f"pg_isready -U {db.user} -d {db.name} -h 127.0.0.1"], start_period="1m"),  # as the engine reads it back ("60s" would diff forever)
        )
        redis_file = _secret("redis-conf", site, secrets.redis_password.apply(redis_conf), self)
        self.redis = swarm_service(
            "redis", site, service="redis", image=cfg.images.redis, limits=cfg.resources.redis,
            parent=self, constraints=data, stateless=False,
            env={"TZ": cfg.timezone},
            # The entrypoint runs `redis-server <file.conf> ...` as the redis user.
            args=[f"{SECRETS_DIR}/redis.conf", *render_redis_args(redis_settings(cfg))],
            mounts=[_volume(f"{prefix}-redis-data", "/data")],
            secrets=[_mount_secret(redis_file, "redis.conf", 0o444)],
            # Up and answering (NOAUTH without the password is an answer): no password in argv/env.
            health=_health(["CMD-SHELL", "redis-cli ping 2>&1 | grep -q -e PONG -e NOAUTH"]),
        )
        minio_pw = _secret("minio-password", site, secrets.minio_password, self)
        console = ["--console-address", ":9001"] if cfg.minio.console else []
        self.minio = swarm_service(
            "minio", site, service="minio", image=cfg.images.minio, limits=cfg.resources.minio,
            parent=self, constraints=data, stateless=False,
            env={"MINIO_ROOT_USER": cfg.minio.root_user, "MINIO_ROOT_PASSWORD_FILE": f"{SECRETS_DIR}/minio_password",
                 "TZ": cfg.timezone},
            args=["server", "/data", *console],
            mounts=[_volume(f"{prefix}-minio-data", "/data")],
            secrets=[_mount_secret(minio_pw, "minio_password", 0o444)],
            health=_health(_http_check("http://127.0.0.1:9000/minio/health/live"), start_period="30s"),
        )
        bucket_inner = (
            'mc alias set local http://127.0.0.1:9000 "$MINIO_ROOT_USER" "$(cat /run/secrets/minio_password)" >/dev/null'
            f" && mc mb --ignore-existing local/{cfg.minio.bucket}"
        )
        bucket = _manager_sh(
            "minio-bucket", task_exec_script(f"{prefix}-minio", bucket_inner), data_node, self,
            triggers=[self.minio.id, cfg.minio.bucket], depends_on=[self.minio],
        )

        # --- API: replicas anywhere, start-first, rolled back by Swarm -------------------
        s = secrets
        api_secrets = pulumi.Output.all(s.db_password, s.redis_password, s.minio_password, s.turn_password, s.jwt_secret).apply(
            lambda v: ApiSecrets(*v, smtp_password=cfg.smtp.password.get_secret_value())
        )
        api_env = pulumi.Output.secret(api_secrets.apply(lambda a: api_environment(cfg, a)))
        self.migrations = None
        api_deps: list[pulumi.Resource] = [self.postgres, self.redis, self.minio, bucket]
        if cfg.api.run_migrations:
            env_file = api_env.apply(lambda e: "".join(f"{k}={v}\n" for k, v in e.items()))
            self.migrations = _manager_sh(
                "api-migrations",
                self.network.name.apply(lambda n: migrate_script(n, cfg.images.api, cfg.api.migrate_command)),
                manager, self,
                triggers=[cfg.images.api, " ".join(cfg.api.migrate_command)],
                depends_on=[self.postgres],
                stdin=pulumi.Output.secret(env_file),
            )
            api_deps.append(self.migrations)
        api_health = f"http://127.0.0.1:{cfg.api.port}{cfg.api.health_path}"
        self.api = swarm_service(
            "api", site, service="api", image=cfg.images.api, limits=cfg.resources.api, parent=self,
            replicas=cfg.api.replicas, env=api_env,
            # A release that never answers fails after 20 s + 15 x 2 s, then Swarm rolls it back.
            health=_health(_http_check(api_health), start_period="20s"),
            converge_timeout=cfg.api.start_timeout + 60,
            depends_on=api_deps,
        )
        self.web = swarm_service(
            "web", site, service="web", image=cfg.images.web, limits=cfg.resources.web, parent=self,
            replicas=min(2, len(target.nodes)), env={"TZ": cfg.timezone},
            health=_health(_http_check(f"http://127.0.0.1:{cfg.web.port}/")),
        )

        # --- nginx: the edge, host-mode ports, names re-resolved through Docker's DNS -----
        conf = render_nginx_conf(
            dataclasses.replace(
                nginx_site(cfg, [f"api:{cfg.api.port}"], f"web:{cfg.web.port}", None),
                dns_resolver="127.0.0.11",
                api_connect_timeout="2s",
                ws_connect_timeout="2s",
            )
        )
        assert tls_material.certificate_pem is not None and tls_material.private_key_pem is not None
        nginx_conf = _config("nginx-conf", site, conf, self)
        cert = _secret("tls-cert", site, tls_material.certificate_pem, self)
        key = _secret("tls-key", site, tls_material.private_key_pem, self)
        self.nginx = swarm_service(
            "nginx", site, service="nginx", image=cfg.images.nginx, limits=cfg.resources.nginx, parent=self,
            # One task on each edge node. Not `global` mode: the provider cannot wait for a
            # global service to converge, and the `up` must fail when nginx does not start.
            replicas=len(edge_nodes), constraints=[ON_EDGE_NODES], max_per_node=1, env={"TZ": cfg.timezone},
            configs=[_mount_config(nginx_conf, "/etc/nginx/nginx.conf")],
            secrets=[_mount_secret(cert, f"{CERT_DIR_IN_NGINX}/fullchain.pem", 0o444),
                     _mount_secret(key, f"{CERT_DIR_IN_NGINX}/privkey.pem", 0o400)],
            ports=[
                docker.ServiceEndpointSpecPortArgs(target_port=80, published_port=cfg.nginx.http_port, publish_mode="host", protocol="tcp"),
                docker.ServiceEndpointSpecPortArgs(target_port=443, published_port=cfg.nginx.https_port, publish_mode="host", protocol="tcp"),
            ],
            health=_health(_http_check("https://127.0.0.1/health", insecure=True)),
            depends_on=[self.api, self.web, *tls_material.ready],
        )
        self.verified = [
            _manager_sh(f"verify-deploy-{key_}", verify_script(cfg), conn, self,
                        triggers=[self.nginx.id, cfg.images.api, conf], depends_on=[self.nginx, self.api])
            for key_, conn in edge_nodes
        ]
        self.register_outputs({"network": self.network.name})
