"""From the stack config to each component's narrow args: the one place, with the two stacks
(components/stack.py, components/swarm_stack.py), that reads `StackConfig`.

Both targets build their service definitions from the same functions here, so a setting means
the same on one server and on a swarm by construction.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pulumi

from config.model import EDGE_LABEL, SshTarget, StackConfig, SwarmNode
from render.backup import BackupSettings, OffsiteSettings
from render.bootstrap import BootstrapSettings
from render.certbot import CertbotSettings
from render.monitoring import (
    RULES_PATH,
    AlertmanagerSettings,
    AlertSettings,
    EmailReceiver,
    HttpProbe,
    PrometheusSettings,
    render_alert_rules,
    render_alertmanager_config,
    render_blackbox_config,
    render_prometheus_config,
)
from render.nginx import Maintenance, NginxSite

from . import catalogue
from .backups import OffsiteCredentials
from .api import replica_alias
from .bootstrap import BootstrapArgs
from .images import MONITORING, SERVICES
from .catalogue import CERT_DIR_IN_NGINX
from .datastores import MajorUpgrade
from .definition import LABEL_NAME
from .monitoring import TEXTFILE_SUBDIR
from .secrets import Secrets
from .tls import EdgeCertificatesArgs, TlsArgs


@dataclass(frozen=True)
class ApiSecrets:
    db_password: str
    redis_password: str
    minio_password: str
    turn_password: str
    jwt_secret: str
    smtp_password: str


def api_environment(cfg: StackConfig, s: ApiSecrets) -> dict[str, str]:
    """The plan's `.env` (§4.3), key for key, with generated secrets and in-network hosts."""
    db, app = cfg.database, cfg.app
    return {
        # Application
        "NODE_ENV": app.node_env,
        "APP_PORT": str(cfg.api.port),
        "TZ": cfg.timezone,
        # Database
        "DATABASE_URL": f"postgresql://{db.user}:{s.db_password}@postgres:5432/{db.name}",
        "DB_HOST": "postgres",
        "DB_PORT": "5432",
        "DB_NAME": db.name,
        "DB_USER": db.user,
        "DB_PASSWORD": s.db_password,
        # Redis
        "REDIS_URL": f"redis://:{s.redis_password}@redis:6379",
        "REDIS_HOST": "redis",
        "REDIS_PORT": "6379",
        "REDIS_PASSWORD": s.redis_password,
        # JWT
        "JWT_SECRET": s.jwt_secret,
        "JWT_EXPIRES_IN": app.jwt_expires_in,
        "REFRESH_TOKEN_EXPIRES_IN": app.refresh_token_expires_in,
        # MinIO
        "MINIO_ROOT_USER": cfg.minio.root_user,
        "MINIO_ROOT_PASSWORD": s.minio_password,
        "MINIO_ENDPOINT": "minio:9000",
        "MINIO_BUCKET": cfg.minio.bucket,
        # SMTP
        "SMTP_HOST": cfg.smtp.host,
        "SMTP_PORT": str(cfg.smtp.port),
        "SMTP_USER": cfg.smtp.user,
        "SMTP_PASSWORD": s.smtp_password,
        # WebRTC
        "STUN_SERVERS": ",".join(cfg.webrtc.stun_servers),
        "TURN_SERVER": cfg.webrtc.turn_server,
        "TURN_USERNAME": cfg.webrtc.turn_username,
        "TURN_PASSWORD": s.turn_password,
        # Monitoring
        "ENABLE_METRICS": str(app.enable_metrics).lower(),
        "METRICS_PORT": str(app.metrics_port),
        # Logging
        "LOG_LEVEL": app.log_level,
        "LOG_FORMAT": app.log_format,
    }


def is_server(cfg: StackConfig) -> bool:
    """Servers (ssh, every swarm node) have the plan's layout under install_dir, cron, disks."""
    return cfg.target.kind in ("ssh", "swarm")


def bootstrap_args(cfg: StackConfig, user: str, ssh_port: int, *, swarm: bool = False, edge: bool = True,
                   server_id: str = "") -> BootstrapArgs:
    b = cfg.bootstrap
    port = b.ssh_port or ssh_port
    dockerd = b.docker
    return BootstrapArgs(
        settings=BootstrapSettings(
            deploy_user=user,
            timezone=cfg.timezone,
            ssh_port=port,
            allowed_tcp_ports=tuple(sorted({port, *b.allowed_tcp_ports})),
            install_dir=cfg.install_dir,
            min_cpus=b.min_cpus,
            min_memory_gb=b.min_memory_gb,
            min_disk_gb=b.min_disk_gb,
            preflight_mode=b.preflight_mode,
            letsencrypt=cfg.tls.mode == "letsencrypt" and edge,  # certbot where nginx runs
            offsite_backups=cfg.backup.offsite.enabled,
            app_log_uid=cfg.api.log_uid,
            # Unset: live-restore on a single server, off on swarm nodes (swarm mode refuses it;
            # the config model rejects true for a swarm); userland-proxy the other way round.
            docker_live_restore=(not swarm) if dockerd.live_restore is None else dockerd.live_restore,
            docker_no_new_privileges=dockerd.no_new_privileges,
            docker_userland_proxy=swarm if dockerd.userland_proxy is None else dockerd.userland_proxy,
            docker_log_max_size=dockerd.log_max_size,
            docker_log_max_file=dockerd.log_max_file,
            published_ports=(cfg.nginx.http_port, cfg.nginx.https_port),
        ),
        harden_ssh=b.harden_ssh,
        server_id=server_id,
    )


def ssh_bootstrap_args(cfg: StackConfig, server_id: str = "") -> BootstrapArgs:
    assert isinstance(cfg.target, SshTarget)
    return bootstrap_args(cfg, cfg.target.user, cfg.target.port, server_id=server_id)


def node_bootstrap_args(cfg: StackConfig, node: SwarmNode) -> BootstrapArgs:
    return bootstrap_args(cfg, node.user, node.port, swarm=True, edge=node.labels.get(EDGE_LABEL) == "true")


def certbot_settings(cfg: StackConfig) -> CertbotSettings:
    return CertbotSettings(
        domains=tuple(cfg.domains),
        email=cfg.tls.email or "",
        install_dir=cfg.install_dir,
        webroot=f"{cfg.install_dir}/acme",
        acme_server=cfg.tls.acme_server,
        nginx_container=cfg.container_name("nginx"),
        ca_bundle=cfg.tls.acme_ca_bundle,
    )


def edge_certificates_args(cfg: StackConfig) -> EdgeCertificatesArgs:
    """A swarm's edge nodes: certbot by webroot (nginx is up first), reloading the local task."""
    settings = dataclasses.replace(certbot_settings(cfg), nginx_service=cfg.container_name("nginx"), challenge="webroot")
    return EdgeCertificatesArgs(certbot=settings, acme_ca_bundle=cfg.tls.acme_ca_bundle)


def tls_args(cfg: StackConfig) -> TlsArgs:
    return TlsArgs(tls=cfg.tls, domains=tuple(cfg.domains),
                   certbot=certbot_settings(cfg) if cfg.tls.mode == "letsencrypt" else None)


def image_refs(cfg: StackConfig) -> dict[str, str]:
    """service -> pinned image reference, for what this config runs."""
    wanted = list(SERVICES)
    mon = cfg.monitoring
    if mon.enabled:
        wanted += list(MONITORING) + (["grafana"] if mon.grafana else [])
        wanted += ["alertmanager"] if mon.alertmanager.enabled else []
    return {s: getattr(cfg.images, s) for s in wanted}


# --- service definitions' args ------------------------------------------------------------


def loopback(cfg: StackConfig, key: str) -> int | None:
    # A swarm publishes nothing on 127.0.0.1 (config/model.py refuses loopback ports there).
    return None if cfg.target.kind == "swarm" else getattr(cfg.loopback_ports, key)


def postgres_args(cfg: StackConfig, image: pulumi.Input[str], secrets: Secrets) -> catalogue.PostgresArgs:
    return catalogue.PostgresArgs(image=image, limits=cfg.resources.postgres, database=cfg.database, timezone=cfg.timezone,
                                  password=secrets.db_password, loopback_port=loopback(cfg, "postgres"),
                                  hardening=cfg.hardening.postgres)


def major_upgrade(cfg: StackConfig) -> MajorUpgrade:
    """A PostgreSQL major upgrade's settings (README: PostgreSQL major upgrade)."""
    prefix = cfg.name_prefix
    return MajorUpgrade(mode=cfg.database.upgrade, app_label=f"{LABEL_NAME}={prefix}-api", proxy_container=f"{prefix}-nginx")


def redis_args(cfg: StackConfig, image: pulumi.Input[str], secrets: Secrets) -> catalogue.RedisArgs:
    return catalogue.RedisArgs(image=image, limits=cfg.resources.redis, redis=cfg.redis, timezone=cfg.timezone,
                               password=secrets.redis_password, loopback_port=loopback(cfg, "redis"),
                               hardening=cfg.hardening.redis)


def minio_args(cfg: StackConfig, image: pulumi.Input[str], secrets: Secrets) -> catalogue.MinioArgs:
    return catalogue.MinioArgs(image=image, limits=cfg.resources.minio, minio=cfg.minio, timezone=cfg.timezone,
                               password=secrets.minio_password, loopback_port=loopback(cfg, "minio"),
                               loopback_console_port=loopback(cfg, "minio_console"), hardening=cfg.hardening.minio)


def api_args(cfg: StackConfig, image: pulumi.Input[str], secrets: Secrets) -> catalogue.ApiArgs:
    s = secrets
    env = pulumi.Output.all(s.db_password, s.redis_password, s.minio_password, s.turn_password, s.jwt_secret).apply(
        lambda v: api_environment(cfg, ApiSecrets(*v, smtp_password=cfg.smtp.password.get_secret_value()))
    )
    return catalogue.ApiArgs(image=image, limits=cfg.resources.api, api=cfg.api, environment=pulumi.Output.secret(env),
                             log_dir=f"{cfg.install_dir}/logs/app" if is_server(cfg) else None,
                             hardening=cfg.hardening.api)


def web_args(cfg: StackConfig, image: pulumi.Input[str], replicas: int = 1) -> catalogue.WebArgs:
    return catalogue.WebArgs(image=image, limits=cfg.resources.web, port=cfg.web.port, timezone=cfg.timezone, replicas=replicas,
                             hardening=cfg.hardening.web)


def nginx_site(cfg: StackConfig, api_upstreams: list[str], web_upstream: str, acme_webroot: str | None) -> NginxSite:
    return NginxSite(
        server_names=tuple(cfg.domains),
        api_upstreams=tuple(api_upstreams),
        web_upstream=web_upstream,
        public_https_port=cfg.nginx.https_port,
        worker_connections=cfg.nginx.worker_connections,
        client_max_body_size=cfg.nginx.client_max_body_size,
        ssl_certificate=f"{CERT_DIR_IN_NGINX}/fullchain.pem",
        ssl_certificate_key=f"{CERT_DIR_IN_NGINX}/privkey.pem",
        acme_webroot="/var/www/acme" if acme_webroot else None,
    )


def maintenance(cfg: StackConfig) -> Maintenance:
    m = cfg.maintenance
    return Maintenance(enabled=m.enabled, allow=tuple(m.allow), message=m.message, retry_after=m.retry_after)


# --- operations: backups and monitoring -----------------------------------------------------


def backup_settings(cfg: StackConfig) -> BackupSettings:
    prefix = cfg.name_prefix
    return BackupSettings(
        install_dir=cfg.install_dir,
        backup_dir=cfg.backup.dir,
        retention_days=cfg.backup.retention_days,
        schedule=cfg.backup.schedule,
        postgres_container=f"{prefix}-postgres",
        redis_container=f"{prefix}-redis",
        minio_container=f"{prefix}-minio",
        proxy_container=f"{prefix}-nginx",
        db_name=cfg.database.name,
        db_user=cfg.database.user,
        # The API replicas (auto-named): stopped while the data is replaced, started after.
        app_labels=(f"{LABEL_NAME}={prefix}-api",),
        swarm=cfg.target.kind == "swarm",
        api_service=f"{prefix}-api",
        drill_schedule=cfg.backup.drill_schedule,
        offsite=OffsiteSettings(endpoint=o.endpoint, bucket=o.bucket, prefix=o.prefix, retention_days=o.retention_days)
        if (o := cfg.backup.offsite).enabled and o.endpoint and o.bucket else None,
    )


def offsite_credentials(cfg: StackConfig) -> OffsiteCredentials | None:
    o = cfg.backup.offsite
    if not (o.enabled and o.access_key and o.secret_key):
        return None
    return OffsiteCredentials(access_key=o.access_key, secret_key=pulumi.Output.secret(o.secret_key.get_secret_value()),
                              protect=cfg.protect)


def backups_enabled(cfg: StackConfig) -> bool:
    """Backups need a server's cron and disk: never written into a laptop's own machine."""
    return cfg.backup.enabled and is_server(cfg)


def alert_settings(cfg: StackConfig) -> AlertSettings:
    a = cfg.monitoring.alerts
    return AlertSettings(
        target_down_for=a.target_down_for,
        api_error_ratio=a.api_error_ratio,
        api_errors_for=a.api_errors_for,
        disk_used_percent=a.disk_used_percent,
        disk_for=a.disk_for,
        backup_max_age_hours=a.backup_max_age_hours,
        backup_for=a.backup_for,
        certificate_min_days=a.certificate_min_days,
        certificate_for=a.certificate_for,
        backups=backups_enabled(cfg),
        restore_drills=cfg.backup.drill_schedule is not None,
        offsite_backups=cfg.backup.offsite.enabled,
        drill_max_age_days=a.restore_drill_max_age_days,
        expected_api_replicas=cfg.api.replicas if cfg.target.kind == "swarm" else None,
    )


def prometheus_settings(cfg: StackConfig, stack: str) -> PrometheusSettings:
    swarm = cfg.target.kind == "swarm"
    metrics = cfg.app.metrics_port
    return PrometheusSettings(
        api_targets=(f"api:{metrics}",) if swarm else tuple(f"{replica_alias(i)}:{metrics}" for i in range(1, cfg.api.replicas + 1)),
        scrape_interval=cfg.monitoring.scrape_interval,
        evaluation_interval=cfg.monitoring.evaluation_interval,
        stack=stack,
        http_probes=(
            # Through nginx as a client sees it: TLS, the certificate (its expiry), the API behind it.
            HttpProbe("nginx", "https://nginx/health", "https_2xx"),
            HttpProbe("api-via-nginx", "https://nginx/api/health", "https_2xx"),  # as the post-deploy check (§7.3)
            HttpProbe("web", f"http://web:{cfg.web.port}/"),
            HttpProbe("minio", "http://minio:9000/minio/health/live"),
        ),
        tcp_probes=(("postgres", "postgres:5432"), ("redis", "redis:6379")),
        rules_path=RULES_PATH,
        dns_discovery=swarm,
        alertmanagers=("alertmanager:9093",) if cfg.monitoring.alertmanager.enabled else (),
    )


def alertmanager_settings(cfg: StackConfig) -> AlertmanagerSettings:
    am = cfg.monitoring.alertmanager
    e = am.email
    email = EmailReceiver(
        to=tuple(e.to), sender=e.from_, smarthost=e.smarthost, auth_username=e.auth_username,
        auth_password=e.auth_password.get_secret_value() if e.auth_password else None, require_tls=e.require_tls,
    ) if e else None
    return AlertmanagerSettings(
        webhook_urls=tuple(u.get_secret_value() for u in am.webhook_urls), email=email, group_wait=am.group_wait,
        group_interval=am.group_interval, repeat_interval=am.repeat_interval, send_resolved=am.send_resolved,
    )


def monitoring_args(cfg: StackConfig, ids: dict[str, pulumi.Output[str]] | dict[str, str], stack: str) -> catalogue.MonitoringArgs:
    mon = cfg.monitoring
    return catalogue.MonitoringArgs(
        limits=cfg.resources.monitoring,
        prometheus_image=ids["prometheus"],
        node_exporter_image=ids["node_exporter"],
        blackbox_exporter_image=ids["blackbox_exporter"],
        prometheus_yml=render_prometheus_config(prometheus_settings(cfg, stack)),
        alert_rules_yml=render_alert_rules(alert_settings(cfg)),
        blackbox_yml=render_blackbox_config(cfg.canonical_domain, cfg.tls.mode != "self-signed"),
        retention=mon.retention,
        prometheus_port=None if cfg.target.kind == "swarm" else mon.prometheus_port,
        textfile_dir=f"{cfg.install_dir}/{TEXTFILE_SUBDIR}" if is_server(cfg) else None,
        # A secret: the SMTP password or a webhook token may be in it.
        alertmanager_image=ids.get("alertmanager"),
        alertmanager_yml=(pulumi.Output.secret(render_alertmanager_config(alertmanager_settings(cfg)))
                          if mon.alertmanager.enabled else None),
        alertmanager_port=None if cfg.target.kind == "swarm" else mon.alertmanager.port,
        hardening=cfg.hardening.monitoring,
    )
