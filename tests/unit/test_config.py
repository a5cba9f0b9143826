"""The config model: every bad value is refused with a message naming its key; nothing
about Pulumi is needed to check that."""

from __future__ import annotations


import pytest
import yaml

from config import ConfigError, validate_config
from config.loader import _environment_of, parse_pulumi_config
from tests.support import REPO
from tests.unit.harness import FAKE_PEM, config



def problems(raw: dict, stack: str = "dev") -> list[str]:
    with pytest.raises(ConfigError) as exc:
        validate_config({"environment": stack, **raw} if "environment" not in raw else raw, stack)
    text = str(exc.value)
    assert "Traceback" not in text and "nothing was changed" in text
    return exc.value.problems


def test_defaults_are_valid_and_follow_the_plan():
    cfg = config()
    assert cfg.database.name == "ai_meeting" and cfg.database.user == "ai_meeting"
    assert cfg.minio.bucket == "ai-meeting-recordings"
    assert cfg.redis.maxmemory == "2gb" and cfg.redis.maxmemory_policy == "allkeys-lru"
    assert cfg.resources.api.cpus == 2 and cfg.resources.api.memory_mb == 2048
    assert cfg.backup.schedule == "0 2 * * *" and cfg.backup.retention_days == 30
    assert cfg.timezone == "Asia/Shanghai"
    assert cfg.monitoring.grafana_port == 3002
    assert not cfg.protect and config("prod").protect


@pytest.mark.parametrize(
    "raw, key, words",
    [
        ({"api": {"replicas": 0}}, "ai-meeting:api.replicas", "greater than or equal to 1"),
        ({"api": {"replicas": "three"}}, "ai-meeting:api.replicas", "integer"),
        ({"api": {"replica": 2}}, "ai-meeting:api.replica", "unknown key"),
        ({"colour": "blue"}, "ai-meeting:colour", "unknown key"),
        ({"domains": []}, "ai-meeting:domains", "at least 1"),
        ({"domains": ["Bad_Domain"]}, "ai-meeting:domains", "host name"),
        ({"domains": ["a.com", "a.com"]}, "ai-meeting:domains", "duplicate"),
        ({"timezone": "Mars/Olympus"}, "ai-meeting:timezone", "IANA"),
        ({"tls": {"mode": "none"}}, "ai-meeting:tls.mode", "self-signed"),
        ({"tls": {"mode": "provided"}}, "ai-meeting:tls.certificate", "required"),
        ({"images": {"api": "ghcr.io/x/api"}}, "ai-meeting:images.api", "no tag"),
        ({"images": {"web": "web:latest"}}, "ai-meeting:images.web", "latest"),
        ({"images": {"nginx": "NGINX:1"}}, "ai-meeting:images.nginx", "image reference"),
        ({"resources": {"api": {"cpus": 0, "memory_mb": 512}}}, "ai-meeting:resources.api.cpus", "greater than 0"),
        ({"resources": {"api": {"cpus": 1, "memory_mb": 10}}}, "ai-meeting:resources.api.memory_mb", "64"),
        ({"app": {"log_level": "loud"}}, "ai-meeting:app.log_level", "info"),
        ({"app": {"jwt_expires_in": "7 days"}}, "ai-meeting:app.jwt_expires_in", "duration"),
        ({"redis": {"maxmemory": "lots"}}, "ai-meeting:redis.maxmemory", "size"),
        ({"redis": {"maxmemory_policy": "lru"}}, "ai-meeting:redis.maxmemory_policy", "allkeys-lru"),
        ({"minio": {"bucket": "Bad_Bucket"}}, "ai-meeting:minio.bucket", "bucket name"),
        ({"backup": {"schedule": "nightly"}}, "ai-meeting:backup.schedule", "cron"),
        # cron itself refuses these (found by tests/reliability/test_rb_bad_input.py)
        ({"backup": {"schedule": "0 25 * * *"}}, "ai-meeting:backup.schedule", "hour field '25' must be within 0-23"),
        ({"backup": {"schedule": "60 2 * * *"}}, "ai-meeting:backup.schedule", "minute field"),
        ({"backup": {"schedule": "0 2 0 * *"}}, "ai-meeting:backup.schedule", "day of month field"),
        ({"backup": {"schedule": "0 2 * 13 *"}}, "ai-meeting:backup.schedule", "month field"),
        ({"backup": {"schedule": "0 2 * * 1-8"}}, "ai-meeting:backup.schedule", "day of week field"),
        ({"backup": {"schedule": "0 5-1 * * *"}}, "ai-meeting:backup.schedule", "hour field"),
        ({"backup": {"schedule": "*/0 2 * * *"}}, "ai-meeting:backup.schedule", "steps >= 1"),
        ({"backup": {"retention_days": 0}}, "ai-meeting:backup.retention_days", "greater than or equal to 1"),
        ({"database": {"name": "ai-meeting"}}, "ai-meeting:database.name", "identifier"),
        ({"webrtc": {"turn_server": "turn.example.com"}}, "ai-meeting:webrtc.turn_server", "turn:"),
        ({"target": {"kind": "ftp"}}, "ai-meeting:target", "'local' or 'ssh'"),
        ({"target": {"kind": "ssh", "host": "h.example.com"}}, "ai-meeting:target.private_key", "required"),
        ({"target": {"kind": "ssh", "host": "h.example.com", "private_key": "hunter2"}}, "ai-meeting:target.private_key", "private key"),
        ({"target": {"kind": "local", "docker_host": "ssh://x"}}, "ai-meeting:target.docker_host", "unix://"),
        ({"nginx": {"https_port": 80}}, "ai-meeting:nginx.https_port", "differ"),
        ({"loopback_ports": {"api": 3000, "postgres": 3000}}, "ai-meeting:loopback_ports", "used twice"),
        # Values the Docker provider reads back differently would replace containers on every up.
        ({"resources": {"api": {"cpus": 10, "memory_mb": 2048}}}, "ai-meeting:resources.api.cpus", "cannot be set reliably"),
        ({"resources": {"web": {"cpus": 0.05, "memory_mb": 256}}}, "ai-meeting:resources.web.cpus", "reads it back as '0.1'"),
        ({"tls": {"mode": "letsencrypt", "email": "ops@example.com"}}, "ai-meeting:tls.mode", "needs target.kind ssh or swarm"),
    ],
)
def test_invalid_values_name_their_key(raw, key, words):
    found = problems(raw)
    assert any(p.startswith(f"{key}:") and words in p for p in found), found


def test_all_problems_are_reported_at_once():
    found = problems({"api": {"replicas": 0}, "timezone": "Nowhere", "images": {"api": "api"}, "typo": 1})
    assert len(found) == 4, found


def test_one_resource_limit_set_alone_keeps_the_other_default():
    # `pulumi config set --path ai-meeting:resources.nginx.cpus 2` writes only that key.
    cfg = config(resources={"nginx": {"cpus": 2}, "api": {"memory_mb": 4096}})
    assert (cfg.resources.nginx.cpus, cfg.resources.nginx.memory_mb) == (2, 256)
    assert (cfg.resources.api.cpus, cfg.resources.api.memory_mb) == (2, 4096)
    assert any("ai-meeting:resources.nginx.cpus" in p for p in problems({"resources": {"nginx": {"cpus": "two"}}}))


def test_prod_refuses_self_signed_and_root_login():
    base = {"environment": "prod", "target": {"kind": "ssh", "host": "203.0.113.10", "private_key": FAKE_PEM}}
    assert any("ai-meeting:tls.mode" in p and "prod" in p for p in problems(base, "prod"))
    root = {**base, "tls": {"mode": "letsencrypt", "email": "a@b.co"}, "domains": ["x.example.com"],
            "target": {**base["target"], "user": "root"}}
    assert any(p.startswith("ai-meeting:target.user") for p in problems(root, "prod"))


def test_secrets_never_appear_in_error_messages():
    secret = "-----BEGIN OPENSSH PRIVATE KEY-----\nSUPERSECRETKEYMATERIAL\n-----END OPENSSH PRIVATE KEY-----"
    with pytest.raises(ConfigError) as exc:
        validate_config({"environment": "dev", "target": {"kind": "ssh", "host": "bad host!", "private_key": secret}}, "dev")
    assert "SUPERSECRETKEYMATERIAL" not in str(exc.value)


def test_pulumi_config_values_are_parsed_and_foreign_namespaces_refused():
    raw = parse_pulumi_config({"ai-meeting:api": '{"replicas": 2}', "ai-meeting:timezone": "UTC"}, "dev")
    assert raw == {"api": {"replicas": 2}, "timezone": "UTC"}
    with pytest.raises(ConfigError, match="docker:host"):
        parse_pulumi_config({"docker:host": "tcp://x"}, "dev")


@pytest.mark.parametrize("stack, env", [("dev", "dev"), ("prod", "prod"), ("prod-eu", "prod"), ("staging", "staging"), ("alice", "dev")])
def test_environment_follows_the_stack_name(stack, env):
    assert _environment_of(stack) == env


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_committed_stack_files_validate(stack):
    doc = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]
    raw = {k.split(":", 1)[1]: v for k, v in doc.items()}
    raw.setdefault("environment", stack)
    if stack == "prod":  # the key is set per operator with `pulumi config set --secret`
        raw["target"] = {**raw["target"], "private_key": FAKE_PEM}
    cfg = validate_config(raw, stack)
    assert cfg.environment == stack


@pytest.mark.parametrize("schedule", ["0 2 * * *", "*/15 0-23/2 1,15 1-12 0-7", "59 23 31 12 7", "0 0 1 1 0"])
def test_cron_schedules_within_the_fields_ranges_are_valid(schedule):
    assert validate_config({"environment": "dev", "backup": {"schedule": schedule}}, "dev").backup.schedule == schedule


def test_hardening_is_tightened_or_relaxed_per_service_and_validated():
    cfg = config(hardening={"nginx": {"pids_limit": 200}, "postgres": {"cap_add": ["CHOWN"]}})
    assert cfg.hardening.nginx.pids_limit == 200
    assert cfg.hardening.nginx.cap_add == ["CHOWN", "NET_BIND_SERVICE", "SETGID", "SETUID"], "unset keys keep their default"
    assert cfg.hardening.postgres.cap_add == ["CHOWN"] and cfg.hardening.postgres.pids_limit == 512
    assert cfg.hardening.api.read_only_root and cfg.hardening.api.cap_add == []
    bad = problems({"hardening": {"nginx": {"cap_add": ["SYS_ADMIN"]}}})
    assert any("hardening.nginx.cap_add" in p and "NET_BIND_SERVICE" in p for p in bad), bad
    assert any("hardening.web.pids_limit" in p for p in problems({"hardening": {"web": {"pids_limit": 8}}}))
    assert any("listed twice" in p for p in problems({"hardening": {"api": {"cap_add": ["KILL", "KILL"]}}}))
