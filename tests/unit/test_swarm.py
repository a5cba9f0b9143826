"""target.kind swarm without a swarm: the config rules, the formation scripts, and the
services the program declares (under Pulumi mocks)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from config import ConfigError, validate_config
from render.swarm import render_node_labels, render_swarm_firewall, render_swarm_init, render_swarm_join
from tests.prerequisites import unavailable
from tests.unit.harness import FAKE_PEM, deploy

DATA = {"ai-meeting.data": "true"}
EDGE = {"ai-meeting.edge": "true"}


def nodes(*specs: tuple[str, str, dict]) -> list[dict]:
    return [{"host": h, "role": r, "labels": l} for h, r, l in specs]


def swarm_raw(node_list: list[dict] | None = None, **overrides) -> dict:
    raw = {
        "environment": "staging",
        "target": {
            "kind": "swarm",
            "private_key": FAKE_PEM,
            "nodes": node_list
            or nodes(("10.0.0.1", "manager", {**DATA, **EDGE}), ("10.0.0.2", "worker", {}), ("10.0.0.3", "worker", {})),
        },
        "api": {"replicas": 3},
    }
    raw.update(overrides)
    return raw


def problems(raw: dict) -> str:
    with pytest.raises(ConfigError) as exc:
        validate_config(raw, "staging")
    return "\n".join(exc.value.problems)


def test_a_valid_swarm_config():
    cfg = validate_config(swarm_raw(), "staging")
    assert cfg.target.kind == "swarm"
    assert cfg.target.docker_host == "ssh://deploy@10.0.0.1:22"
    assert [n.role for n in cfg.target.nodes] == ["manager", "worker", "worker"]


@pytest.mark.parametrize(
    "node_list, words",
    [
        (nodes(("10.0.0.1", "worker", {**DATA, **EDGE})), "first node initialises the swarm"),
        (nodes(("10.0.0.1", "manager", {**DATA, **EDGE}), ("10.0.0.1", "worker", {})), "listed twice"),
        (nodes(("10.0.0.1", "manager", EDGE), ("10.0.0.2", "worker", {})), "exactly one node needs the label ai-meeting.data"),
        (nodes(("10.0.0.1", "manager", {**DATA, **EDGE}), ("10.0.0.2", "worker", DATA)), "found 2"),
        (nodes(("10.0.0.1", "manager", DATA), ("10.0.0.2", "worker", {})), "ai-meeting.edge"),
        (nodes(("10.0.0.1", "manager", {**DATA, **EDGE}), ("10.0.0.2", "manager", {})), "odd number"),
        (nodes(("10.0.0.1", "manager", {**DATA, **EDGE, "Bad Key": "x"})), "label 'Bad Key'"),
        (nodes(("10.0.0.1", "boss", {**DATA, **EDGE})), "'manager' or 'worker'"),
        ([], "at least 1"),
    ],
)
def test_invalid_swarms_are_refused_with_the_reason(node_list, words):
    raw = swarm_raw(node_list)
    if not node_list:
        raw["target"]["nodes"] = []
    text = problems(raw)
    assert "ai-meeting:target" in text and words in text, text


def test_same_host_different_ports_is_fine_but_same_advertise_address_is_not():
    two = [
        {"host": "127.0.0.1", "port": 2241, "role": "manager", "advertise_addr": "172.30.240.11", "labels": {**DATA, **EDGE}},
        {"host": "127.0.0.1", "port": 2242, "role": "worker", "advertise_addr": "172.30.240.12"},
    ]
    validate_config(swarm_raw(two), "staging")
    two[1]["advertise_addr"] = "172.30.240.11"
    assert "advertise address 172.30.240.11" in problems(swarm_raw(two))


def test_swarm_refuses_root_nodes():
    root = nodes(("10.0.0.1", "manager", {**DATA, **EDGE}))
    root[0]["user"] = "root"
    assert "target.nodes[0].user" in problems(swarm_raw(root))


def shellcheck(script: str) -> None:
    proc = subprocess.run(["shellcheck", "-s", "bash", "-"], input=script, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def formation_scripts() -> tuple[str, ...]:
    return (render_swarm_init("10.0.0.1"), render_swarm_join("10.0.0.1", "10.0.0.2"),
            render_swarm_firewall(["10.0.0.2", "10.0.0.3"]), render_node_labels("abcdefghij0123", DATA))


def test_formation_scripts_are_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        unavailable("no shellcheck (scripts/setup installs it)")
    for s in formation_scripts():
        shellcheck(s)


def test_formation_scripts_are_idempotent():
    init, join, _, _ = formation_scripts()
    # Both check the node's swarm state before acting, and print the node id last.
    for s in (init, join):
        assert "LocalNodeState" in s and s.strip().endswith("'{{.Swarm.NodeID}}'")
    assert "read -r token" in join and "SWMTKN" not in join
    fw = render_swarm_firewall(["10.0.0.2"])
    for rule in ("port 2377 proto tcp", "port 7946 proto tcp", "port 7946 proto udp", "port 4789 proto udp"):
        assert f"ufw allow from 10.0.0.2 to any {rule}" in fw
    with pytest.raises(ValueError):
        render_node_labels("x; rm -rf /", DATA)
    with pytest.raises(ValueError):
        render_swarm_init("10.0.0.1; reboot")


@pytest.fixture(scope="module")
def swarm_deployed(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("AI_MEETING_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        yield deploy(validate_config(swarm_raw(), "staging"), stack="swarm")
    finally:
        mp.undo()


def services(d) -> dict[str, dict]:
    return {r.inputs["name"].removeprefix("ai-meeting-"): r.inputs for r in d.recorder.of_type("service:Service")}


def test_every_node_is_bootstrapped_then_joined(swarm_deployed):
    names = [r.name for r in swarm_deployed.recorder.resources if r.typ.startswith("command:")]
    for host in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        assert f"node-{host}-bootstrap-docker" in names and f"node-{host}-swarm-firewall" in names
        assert f"node-{host}-labels" in names
    assert "node-10.0.0.1-swarm-init" in names and "swarm-join-tokens" in names
    assert "node-10.0.0.2-swarm-join" in names and "node-10.0.0.3-swarm-join" in names
    join = swarm_deployed.recorder.named("node-10.0.0.2-swarm-join")
    assert "stdin" in join.secret_inputs, "the join token must be secret"
    tokens = swarm_deployed.recorder.named("swarm-join-tokens")
    assert "SWMTKN" not in tokens.inputs["create"]


def test_services_follow_the_swarm_rules(swarm_deployed):
    svc = services(swarm_deployed)
    assert set(svc) == {"postgres", "redis", "minio", "api", "web", "nginx"}
    for name, s in svc.items():
        assert s["endpointSpec"]["mode"] == "dnsrr", name  # no IPVS needed (README: Docker Swarm)
        assert s["updateConfig"]["failureAction"] == "rollback", name
        assert s["taskSpec"]["containerSpec"]["healthcheck"]["tests"][0] == "CMD-SHELL", name
        assert s["taskSpec"]["resources"]["limits"]["nanoCpus"] > 0, name
    api = svc["api"]
    assert api["mode"]["replicated"]["replicas"] == 3 and api["updateConfig"]["order"] == "start-first"
    assert api["rollbackConfig"]["order"] == "start-first"
    for name in ("postgres", "redis", "minio"):
        assert svc[name]["taskSpec"]["placement"]["constraints"] == ["node.labels.ai-meeting.data==true"], name
        assert svc[name]["updateConfig"]["order"] == "stop-first", name  # one task per volume
        assert svc[name]["taskSpec"]["containerSpec"]["mounts"][0]["type"] == "volume"
    nginx = svc["nginx"]
    assert nginx["mode"]["replicated"]["replicas"] == 1 and nginx["taskSpec"]["placement"]["maxReplicas"] == 1
    assert nginx["taskSpec"]["placement"]["constraints"] == ["node.labels.ai-meeting.edge==true"]
    assert {(p["publishedPort"], p["publishMode"]) for p in nginx["endpointSpec"]["ports"]} == {(80, "host"), (443, "host")}


def test_secrets_are_files_where_the_image_reads_files(swarm_deployed):
    svc = services(swarm_deployed)
    pg_env = svc["postgres"]["taskSpec"]["containerSpec"]["env"]
    assert pg_env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/db_password" and "POSTGRES_PASSWORD" not in pg_env
    assert "MINIO_ROOT_PASSWORD" not in svc["minio"]["taskSpec"]["containerSpec"]["env"]
    # Redis reads no _FILE setting: its password is in the service's environment, a secret in state.
    redis = next(r for r in swarm_deployed.recorder.of_type("service:Service") if r.inputs["name"] == "ai-meeting-redis")
    assert "REDIS_PASSWORD" in redis.inputs["taskSpec"]["containerSpec"]["env"]
    assert any(p.startswith("taskSpec") for p in redis.secret_inputs), redis.secret_inputs
    for secret in swarm_deployed.recorder.of_type("secret:Secret"):
        assert "data" in secret.secret_inputs, secret.name
    # nginx re-resolves the services through Docker's DNS.
    conf = next(c for c in swarm_deployed.recorder.of_type("serviceConfig:ServiceConfig") if c.name == "nginx-etc-nginx-nginx-conf")
    import base64

    text = base64.b64decode(conf.inputs["data"]).decode()
    assert "resolver 127.0.0.11 valid=5s" in text and "proxy_pass http://$api_upstream" in text


def test_swarm_outputs_keep_the_ssh_names(swarm_deployed):
    out = swarm_deployed.outputs
    for key in ("public_url", "api_url", "health_url", "database_url", "redis_url", "minio", "internal_endpoints"):
        assert key in out, key
    assert {"database_url", "redis_url"} <= swarm_deployed.secret_outputs
    assert [n["role"] for n in out["swarm"]["nodes"]] == ["manager", "worker", "worker"]
    assert out["swarm"]["data_node"] == "10.0.0.1"


def test_swarm_refuses_a_pids_limit_it_cannot_apply_but_keeps_the_rest_of_the_hardening():
    text = problems(swarm_raw(hardening={"api": {"pids_limit": 300}}))
    assert "hardening.api.pids_limit" in text and "swarm" in text, text
    cfg = validate_config(swarm_raw(hardening={"nginx": {"read_only_root": False}}), "staging")
    assert not cfg.hardening.nginx.read_only_root
    assert cfg.hardening.nginx.cap_add == ["CHOWN", "NET_BIND_SERVICE", "SETGID", "SETUID"], "the rest keeps its default"


def test_letsencrypt_on_a_swarm_issues_on_every_edge_node_after_nginx(tmp_path, monkeypatch):
    """Each edge node: certbot installed by its bootstrap, a placeholder before nginx, its own
    certificate by webroot once nginx runs, then the post-deploy check; nginx mounts the node's
    certificate directory and asks the other edge nodes for a challenge it does not hold."""
    monkeypatch.setenv("AI_MEETING_CACHE", str(tmp_path))
    edges = nodes(("10.0.0.1", "manager", EDGE), ("10.0.0.2", "manager", DATA), ("10.0.0.3", "manager", EDGE))
    d = deploy(validate_config(swarm_raw(edges, tls={"mode": "letsencrypt", "email": "ops@example.com"},
                                         domains=["meet.example.com"]), "staging"), stack="swarm")
    rec = d.recorder
    names = [r.name for r in rec.resources]
    for host in ("10.0.0.1", "10.0.0.3"):
        assert f"node-{host}-bootstrap-certbot" in names, "certbot is installed where nginx runs"
        placeholder, issue = rec.named(f"certbot-placeholder-{host}"), rec.named(f"certbot-issue-{host}")
        assert "--placeholder" in placeholder.inputs["create"] and "/etc/cron.d/ai-meeting-certbot" in placeholder.inputs["create"]
        assert "certbot-issue.sh" in issue.inputs["create"] and "--placeholder" not in issue.inputs["create"]
    assert "node-10.0.0.2-bootstrap-certbot" not in names, "no certbot on a node without nginx"
    issue_script = rec.named("certbot-placeholder-10.0.0.1").inputs["create"]
    assert "NGINX_SERVICE=ai-meeting-nginx" in issue_script and "CHALLENGE=webroot" in issue_script
    nginx = services(d)["nginx"]
    mounts = {m["target"]: m for m in nginx["taskSpec"]["containerSpec"]["mounts"] if m["type"] == "bind"}
    assert mounts["/etc/nginx/ssl"]["source"] == "/opt/ai-meeting/ssl" and mounts["/etc/nginx/ssl"]["readOnly"]
    assert mounts["/var/www/acme"]["source"] == "/opt/ai-meeting/acme"
    assert not [x for x in rec.of_type("secret:Secret") if "privkey" in x.name], "no key in a docker secret"
    import base64

    conf = next(c for c in rec.of_type("serviceConfig:ServiceConfig") if c.name == "nginx-etc-nginx-nginx-conf")
    text = base64.b64decode(conf.inputs["data"]).decode()
    assert "try_files $uri @acme_peers;" in text and "set $acme_peers nginx;" in text and "listen 8089;" in text
