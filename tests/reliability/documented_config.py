"""The configuration rules as the README documents them (its Configuration table), written here
by hand and independently of config/model.py: the oracle that judges the bad-input generator's
cases (tests/reliability/test_rb_bad_input.py), so the program is not its own oracle.

`judge(path, value, top_level)` says whether a value is valid for a key by the README: "valid",
"invalid: <why>", or "undocumented" (the README states no rule that settles it, e.g. a bound only
the model declares). Values of top-level keys reach the program as strings (Pulumi config), so
they are judged in that form; values inside an object keep their JSON type.

Reading of the README used here: an integer key takes an integer (JSON 5, 5.0, or the string
"5", as `pulumi config set --path` writes it), never true/false; a number key likewise; a boolean
key takes true or false (or the strings "true"/"false"); a `a`, `b` or `c` key one of those; a
list key a list of that element; a port 1-65535; `api.replicas` 1-20; durations as Prometheus
writes them (`30s`, `1m`); the time zone an IANA name.
"""

from __future__ import annotations

import math
import re
import zoneinfo

PORT = ("int", 1, 65535)
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
REDIS_POLICIES = ("noeviction", "allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-lfu",
                  "volatile-random", "volatile-ttl")  # redis.io: the maxmemory-policy values
SERVICES = ("postgres", "redis", "minio", "api", "web", "nginx", "monitoring")
CAPABILITIES = ("AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "NET_RAW",
                "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT")  # the README: Docker's default set

# key -> rule: ("int", low, high) | ("number", low_exclusive, high_inclusive) | ("bool",) | ("str",)
# | ("enum", values) | ("list", element rule, min length) | ("duration",) | ("timezone",) | ("port or null",)
RULES: dict[str, tuple] = {
    "environment": ("enum", ("dev", "staging", "prod")),
    "domains": ("list", ("str",), 1),
    "timezone": ("timezone",),
    "install_dir": ("str",),
    "name_prefix": ("str",),
    "tls.mode": ("enum", ("self-signed", "letsencrypt", "provided")),
    "tls.email": ("str",),
    "tls.acme_server": ("str",),
    "tls.acme_ca_bundle": ("str",),
    "tls.certificate": ("str",),
    "tls.private_key": ("str",),
    "tls.self_signed_validity_hours": ("int", None, None),
    "images.pull": ("bool",),
    "images.upload": ("bool",),
    **{f"images.{k}": ("str",) for k in ("postgres", "redis", "minio", "nginx", "api", "web", "prometheus", "grafana",
                                         "node_exporter", "blackbox_exporter")},
    **{f"resources.{s}.cpus": ("number", 0, None) for s in SERVICES},  # a CPU limit: more than 0
    **{f"resources.{s}.memory_mb": ("int", 1, None) for s in SERVICES},
    **{f"hardening.{s}.read_only_root": ("bool",) for s in SERVICES},
    **{f"hardening.{s}.cap_add": ("list", ("enum", CAPABILITIES), 0) for s in SERVICES},
    **{f"hardening.{s}.pids_limit": ("int", 32, 65536) for s in SERVICES},
    "api.replicas": ("int", 1, 20),
    "api.port": PORT,
    "api.health_path": ("str",),
    "api.migrate_command": ("list", ("str",), 1),
    "api.run_migrations": ("bool",),
    "api.start_timeout": ("int", 30, 1800),
    "api.start_period": ("int", 5, 600),
    "api.log_uid": ("int", 0, None),
    "app.node_env": ("str",),
    "app.log_level": ("enum", ("fatal", "error", "warn", "info", "debug", "trace")),
    "app.log_format": ("enum", ("json", "text")),
    "app.jwt_expires_in": ("str",),
    "app.refresh_token_expires_in": ("str",),
    "app.enable_metrics": ("bool",),
    "app.metrics_port": PORT,
    "database.name": ("str",),
    "database.user": ("str",),
    "database.upgrade": ("enum", ("refuse", "dump-restore")),
    "redis.maxmemory": ("str",),
    "redis.maxmemory_policy": ("enum", REDIS_POLICIES),
    "redis.appendonly": ("bool",),
    "minio.root_user": ("str",),
    "minio.bucket": ("str",),
    "minio.console": ("bool",),
    "smtp.host": ("str",),
    "smtp.port": PORT,
    "smtp.user": ("str",),
    "smtp.password": ("str",),
    "webrtc.stun_servers": ("list", ("str",), 1),
    "webrtc.turn_server": ("str",),
    "webrtc.turn_username": ("str",),
    "backup.enabled": ("bool",),
    "backup.schedule": ("str",),  # its form: the bad-cron category's own rules
    "backup.retention_days": ("int", 1, None),
    "backup.dir": ("str",),
    "backup.offsite.enabled": ("bool",),
    "backup.offsite.endpoint": ("str",),  # its form: http(s)://host[:port]
    "backup.offsite.bucket": ("str",),  # its form: an S3 bucket name
    "backup.offsite.prefix": ("str",),
    "backup.offsite.access_key": ("str",),
    "backup.offsite.secret_key": ("str",),
    "backup.offsite.retention_days": ("int", 1, 3650),
    "backup.drill_schedule": ("str",),  # a cron schedule (the bad-cron category's rules), or null: no drill
    "monitoring.enabled": ("bool",),
    "monitoring.grafana": ("bool",),
    "monitoring.grafana_port": PORT,
    "monitoring.prometheus_port": PORT,
    "monitoring.scrape_interval": ("duration",),
    "monitoring.evaluation_interval": ("duration",),
    "monitoring.retention": ("duration",),
    "monitoring.alerts.target_down_for": ("duration",),
    "monitoring.alerts.api_error_ratio": ("number", 0, 1),  # a share of responses
    "monitoring.alerts.api_errors_for": ("duration",),
    "monitoring.alerts.disk_used_percent": ("int", 1, 99),  # a percentage a disk can go above
    "monitoring.alerts.disk_for": ("duration",),
    "monitoring.alerts.backup_max_age_hours": ("int", 1, None),
    "monitoring.alerts.backup_for": ("duration",),
    "monitoring.alerts.restore_drill_max_age_days": ("int", 1, 90),
    "monitoring.alerts.certificate_min_days": ("int", 1, None),
    "monitoring.alerts.certificate_for": ("duration",),
    "monitoring.alertmanager.enabled": ("bool",),
    "monitoring.alertmanager.webhook_urls": ("list", ("str",), 0),
    "monitoring.alertmanager.email": ("str",),  # an object (to, from, smarthost, ...): its own rules below
    "monitoring.alertmanager.send_resolved": ("bool",),
    "monitoring.alertmanager.group_wait": ("duration",),
    "monitoring.alertmanager.group_interval": ("duration",),
    "monitoring.alertmanager.repeat_interval": ("duration",),
    "monitoring.alertmanager.port": PORT,
    "images.alertmanager": ("str",),
    "bootstrap.docker.live_restore": ("bool",),
    "bootstrap.docker.no_new_privileges": ("bool",),
    "bootstrap.docker.userland_proxy": ("bool",),
    "bootstrap.docker.log_max_size": ("str",),
    "bootstrap.docker.log_max_file": ("int", 1, None),
    "maintenance.enabled": ("bool",),
    "maintenance.allow": ("list", ("str",), 0),
    "maintenance.message": ("str",),
    "maintenance.retry_after": ("int", 1, 7 * 86400),
    "bootstrap.preflight_mode": ("enum", ("warn", "fail")),
    "bootstrap.min_cpus": ("int", 1, None),
    "bootstrap.min_memory_gb": ("int", 1, None),
    "bootstrap.min_disk_gb": ("int", 1, None),
    "bootstrap.allowed_tcp_ports": ("list", PORT, 1),
    "bootstrap.ssh_port": PORT,
    "bootstrap.harden_ssh": ("bool",),
    "nginx.worker_connections": ("int", 1, None),
    "nginx.client_max_body_size": ("str",),
    "nginx.http_port": PORT,
    "nginx.https_port": PORT,
    "nginx.bind_address": ("str",),
    "web.port": PORT,
    **{f"loopback_ports.{s}": ("port or null",) for s in ("postgres", "redis", "minio", "minio_console", "api")},
    **{f"rotation.{k}": ("int", 0, None) for k in ("db_password", "redis_password", "minio_password", "turn_password",
                                                   "jwt_secret")},
    "protect_data": ("bool",),
    "allow_self_signed_in_prod": ("bool",),
}


def _as_int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        return int(value)
    return None


def _as_number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value.strip()):
        return float(value)
    return None


def check(rule: tuple, value) -> str:
    """"valid", "invalid: why" or "undocumented" for a value already in the form the program sees."""
    kind = rule[0]
    if kind == "int":
        n = _as_int(value)
        if n is None:
            return f"invalid: not an integer: {value!r}"
        low, high = rule[1], rule[2]
        if (low is not None and n < low) or (high is not None and n > high):
            return f"invalid: {n} outside {low}-{high if high is not None else '...'}"
        return "valid"
    if kind == "number":
        x = _as_number(value)
        if x is None:
            return f"invalid: not a number: {value!r}"
        low, high = rule[1], rule[2]
        if (low is not None and x <= low) or (high is not None and x > high):
            return f"invalid: {x} outside ({low}, {high}]"
        return "valid"
    if kind == "bool":
        if isinstance(value, bool) or (isinstance(value, str) and value.lower() in ("true", "false")):
            return "valid"
        return f"invalid: not true or false: {value!r}"
    if kind == "str":
        return "valid" if isinstance(value, str) else f"invalid: not a string: {value!r}"
    if kind == "enum":
        return "valid" if value in rule[1] else f"invalid: not one of {', '.join(rule[1])}: {value!r}"
    if kind == "duration":
        return "valid" if isinstance(value, str) and DURATION.match(value) else f"invalid: not a duration: {value!r}"
    if kind == "timezone":
        return "valid" if isinstance(value, str) and value in zoneinfo.available_timezones() else f"invalid: no IANA zone {value!r}"
    if kind == "port or null":
        return "valid" if value is None else check(PORT, value)
    if kind == "list":
        if not isinstance(value, list):
            return f"invalid: not a list: {value!r}"
        if len(value) < rule[2]:
            return "invalid: empty list"
        for v in value:
            verdict = check(rule[1], v)
            if verdict != "valid":
                return f"{verdict} (an element)"
        return "valid"
    raise ValueError(f"unknown rule {rule!r}")


def engine_form(value):
    """A top-level config value as the program receives it (Pulumi passes strings; objects and
    lists as JSON, read back as such)."""
    if isinstance(value, (dict, list)):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def judge(path: str, value, top_level: bool | None = None) -> str:
    if path not in RULES:
        return "undocumented"
    if top_level is None:
        top_level = "." not in path
    return check(RULES[path], engine_form(value) if top_level else value)
