"""Each service is defined once (components/catalogue.py): the one-server and the Swarm backends
declare the same probe, start period, limits, command and environment for it. Compared service
by service on what both programs declare under mocks, with the same settings."""

from __future__ import annotations

import pytest

from tests.unit.harness import FAKE_PEM, deploy
from config import validate_config

SERVICES = ("postgres", "redis", "minio", "api", "web", "nginx", "prometheus", "node-exporter", "blackbox-exporter")
COMMON = {
    "environment": "staging",
    "api": {"replicas": 2},
    "monitoring": {"enabled": True, "grafana": False},
    "backup": {"enabled": True},
}


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("AI_MEETING_CACHE", str(tmp_path_factory.mktemp("cache")))
    server = validate_config({**COMMON, "target": {"kind": "ssh", "host": "203.0.113.10", "private_key": FAKE_PEM},
                              "loopback_ports": {k: None for k in ("postgres", "redis", "minio", "minio_console", "api")}},
                             "staging")
    swarm = validate_config({**COMMON, "target": {"kind": "swarm", "private_key": FAKE_PEM, "nodes": [
        {"host": "203.0.113.10", "role": "manager", "labels": {"ai-meeting.data": "true", "ai-meeting.edge": "true"}},
        {"host": "203.0.113.11"}, {"host": "203.0.113.12"}]}}, "staging")
    yield deploy(server), deploy(swarm)
    mp.undo()


def containers_by_service(d) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for c in d.recorder.containers():
        labels = {l["label"]: l["value"] for l in c.inputs["labels"]}
        # Replicas are alike: the first. Its files, wherever the backend put them.
        out.setdefault(labels["ai-meeting.service"], {**c.inputs, "uploads": d.recorder.uploads_of(c)})
    return out


def services_by_name(d) -> dict[str, dict]:
    return {s.inputs["name"].removeprefix("ai-meeting-"): s.inputs for s in d.recorder.of_type("service:Service")}


def container_env(inputs: dict) -> dict[str, str]:
    return dict(e.split("=", 1) for e in inputs.get("envs") or [])


def swarm_env(inputs: dict) -> dict[str, str]:
    """The service's environment with each `<VAR>_FILE` secret read back as `<VAR>`."""
    env = dict(inputs["taskSpec"]["containerSpec"].get("env") or {})
    for key in [k for k in env if k.endswith("_FILE")]:
        env[key.removesuffix("_FILE")] = "<file>"
        del env[key]
    return env


@pytest.mark.parametrize("service", SERVICES)
def test_both_backends_declare_the_same_service(both, service):
    server, swarm = both
    c = containers_by_service(server)[service]
    s = services_by_name(swarm)[service]
    spec = s["taskSpec"]["containerSpec"]

    assert c["healthcheck"] == spec["healthcheck"], "probe, interval, timeout, retries and start period"
    assert float(c["cpus"]) * 1e9 == s["taskSpec"]["resources"]["limits"]["nanoCpus"]
    assert c["memory"] * 1024 * 1024 == s["taskSpec"]["resources"]["limits"]["memoryBytes"]
    assert (c.get("command") or None) == (spec.get("args") or None), "the same command after the entrypoint"
    env_c, env_s = container_env(c), swarm_env(s)
    assert set(env_c) == set(env_s), "the same settings"
    for key, value in env_s.items():
        if value != "<file>" and not key.startswith(("DATABASE_URL", "REDIS", "DB_PASSWORD", "MINIO_ROOT_PASSWORD",
                                                     "JWT", "TURN_PASSWORD", "SMTP_PASSWORD")):
            assert env_c[key] == value, key
    upload_paths = {u["file"] for u in c.get("uploads") or []}
    file_paths = {f["fileName"] for f in (spec.get("configs") or []) + (spec.get("secrets") or [])
                  if not f["fileName"].startswith("/run/secrets") and "/" in f["fileName"]}
    assert upload_paths == file_paths, "the same files in the container"
    assert c["logDriver"] == s["taskSpec"]["logDriver"]["name"] and c["logOpts"] == s["taskSpec"]["logDriver"]["options"]
    # Least privilege (README: Hardening): the same user, capabilities, read-only root and
    # in-memory scratch; no-new-privileges on the container, the daemon default on a swarm.
    assert c.get("user") == spec.get("user")
    assert c["capabilities"]["drops"] == spec["capDrops"] == ["ALL"]
    assert (c["capabilities"].get("adds") or []) == (spec.get("capAdds") or [])
    assert c["readOnly"] is True and spec["readOnly"] is True
    assert c["securityOpts"] == ["no-new-privileges:true"]
    tmpfs_on_swarm = {m["target"] for m in spec.get("mounts") or [] if m["type"] == "tmpfs"}
    assert set(c.get("tmpfs") or {}) == tmpfs_on_swarm and "/tmp" in tmpfs_on_swarm
    assert (c.get("sysctls") or None) == (spec.get("sysctl") or None)


def test_secrets_in_env_are_the_same_values_on_both(both):
    """Where a swarm service keeps a secret in its environment (the API, Redis), it holds the
    same generated values as on one server (mocks generate them deterministically)."""
    server, swarm = both
    for service in ("api", "redis"):
        env_c = container_env(containers_by_service(server)[service])
        env_s = swarm_env(services_by_name(swarm)[service])
        assert env_c == env_s, service


def test_the_same_scripts_run_around_the_services(both):
    """Password sync and bucket: one script each, run by either target's shell. Migrations: the
    same command; on one server inside the first new replica (no secret input, so saved plans
    apply), on a swarm in a throwaway container on the overlay (a replica may be on any node)."""
    server, swarm = both
    for name in ("postgres-password-sync", "minio-bucket"):
        a, b = server.recorder.named(name).inputs, swarm.recorder.named(name).inputs
        assert a["stdin"] == b["stdin"], name
    mig_a, mig_b = server.recorder.named("api-migrations").inputs, swarm.recorder.named("api-migrations").inputs
    assert mig_a["create"].endswith("npm run migration:run") and mig_b["create"].endswith("npm run migration:run")
    assert "stdin" not in server.recorder.named("api-migrations").secret_inputs
    assert "backup-install" in {r.name for r in swarm.recorder.resources}


def test_outputs_follow_the_config_on_both(both):
    server, swarm = both
    for d in both:
        assert d.outputs["backup"]["enabled"] is True
        assert d.outputs["api_replicas"] == 2
    assert "prometheus_url" not in swarm.outputs  # nothing published on a swarm's loopback
    assert set(swarm.outputs["swarm"]["services"]) >= {"prometheus", "node-exporter"}
