"""The stack under Pulumi mocks: invariants of every container, dev vs prod, secrets."""

from __future__ import annotations

import re

import pytest

from components.assembly import ApiSecrets, api_environment
from tests.unit.harness import FAKE_PEM, MOCK_MACHINE_ID, config, deploy

SEED_ENV_KEYS = [
    "NODE_ENV", "APP_PORT", "DATABASE_URL", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD",
    "REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "JWT_SECRET", "JWT_EXPIRES_IN",
    "REFRESH_TOKEN_EXPIRES_IN", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "MINIO_ENDPOINT", "MINIO_BUCKET",
    "SMTP_HOST", "SMTP_PORT", "SMTP_USER", "SMTP_PASSWORD", "STUN_SERVERS", "TURN_SERVER", "TURN_USERNAME",
    "TURN_PASSWORD", "ENABLE_METRICS", "METRICS_PORT", "LOG_LEVEL", "LOG_FORMAT",
]


@pytest.fixture(scope="module", params=["dev", "prod"])
def deployed(request, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("AI_MEETING_CACHE", str(tmp_path_factory.mktemp("cache")))
    return request.param, deploy(config(request.param))


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def labels(c) -> dict[str, str]:
    return {l["label"]: l["value"] for l in c.inputs.get("labels", [])}


def test_every_container_keeps_the_invariants(deployed):
    _, d = deployed
    containers = d.recorder.containers()
    assert containers
    for c in containers:
        where = f"container {c.name}"
        assert c.inputs["restart"] == "unless-stopped", where
        # At least as long as the container's healthcheck needs to give up (no premature failure).
        hc = c.inputs["healthcheck"]
        secs = {k: int(hc[k].rstrip("s")) for k in ("interval", "timeout", "startPeriod")}
        assert c.inputs["wait"] is True and c.inputs["waitTimeout"] >= min(
            secs["startPeriod"] + hc["retries"] * secs["interval"] + secs["timeout"], 120), where
        assert c.inputs["healthcheck"]["tests"][0] in ("CMD", "CMD-SHELL"), where
        assert float(c.inputs["cpus"]) > 0 and c.inputs["memory"] >= 64, where
        assert c.inputs["logDriver"] == "json-file" and c.inputs["logOpts"]["max-size"], where
        assert labels(c)["ai-meeting.service"] and labels(c)["ai-meeting.kind"] == "service", where
        assert c.inputs["image"].startswith("sha256:"), f"{where}: containers take the image id, not a tag"
        assert c.provider and "docker" in c.provider, f"{where}: explicit provider"


def test_only_nginx_listens_beyond_loopback(deployed):
    _, d = deployed
    for c in d.recorder.containers():
        for p in c.inputs.get("ports", []):
            if labels(c)["ai-meeting.service"] == "nginx" and p["internal"] in (80, 443):
                continue
            else:
                assert p["ip"] == "127.0.0.1", f"{c.name} publishes {p} beyond 127.0.0.1"


def test_api_gets_every_seed_variable(deployed):
    _, d = deployed
    for api in [c for c in d.recorder.containers() if labels(c)["ai-meeting.service"] == "api"]:
        env = dict(e.split("=", 1) for e in api.inputs["envs"])
        missing = [k for k in SEED_ENV_KEYS if k not in env]
        assert not missing, f"{api.name} lacks {missing}"
        assert env["DATABASE_URL"] == f"postgresql://ai_meeting:{env['DB_PASSWORD']}@postgres:5432/ai_meeting"
        assert env["REDIS_URL"] == f"redis://:{env['REDIS_PASSWORD']}@redis:6379"
        assert len(env["DB_PASSWORD"]) >= 32 and len(env["JWT_SECRET"]) >= 64


def test_nginx_upstream_lists_every_replica(deployed):
    env, d = deployed
    replicas = 3 if env == "prod" else 1
    apis = [c for c in d.recorder.containers() if labels(c)["ai-meeting.service"] == "api"]
    assert len(apis) == replicas
    assert all(not c.inputs.get("ports") for c in apis), "replicas publish no host port (a new one starts beside the old)"
    nginx = d.recorder.named("nginx")
    conf = next(u["content"] for u in d.recorder.uploads_of(nginx) if u["file"] == "/etc/nginx/nginx.conf")
    # nginx.conf names no replica: scaling or a rollout must not replace nginx.
    assert "include /etc/nginx/upstreams/upstreams.conf;" in conf and "api-1" not in conf
    script = d.recorder.named("nginx-upstreams-reload").inputs["create"]
    upstream = re.search(r"upstream api_backend \{(.*?)\}", script, re.S).group(1)
    assert "least_conn" in upstream
    servers = re.findall(r"server (\S+):3000 max_fails=3", upstream)
    assert sorted(servers) == sorted(f"{c.name}-1a2b3c4" for c in apis), "upstream = the replica containers by name"
    assert "nginx -s reload" in script and "nginx -t" in script
    aliases = sorted(a for c in apis for a in c.inputs["networksAdvanced"][0]["aliases"] if a.startswith("api-"))
    assert aliases == [f"api-{i}" for i in range(1, replicas + 1)]


def test_cpus_are_sent_as_the_provider_reads_them_back(deployed):
    _, d = deployed
    for c in d.recorder.containers():
        assert c.inputs["cpus"] in ("0.5", "1.0", "2.0"), f"{c.name}: cpus {c.inputs['cpus']!r} would replace it on every up"


def test_secrets_are_exported_only_as_secrets(deployed):
    _, d = deployed
    assert {"database_url", "redis_url"} <= d.secret_outputs
    assert "public_url" not in d.secret_outputs
    assert d.outputs["minio"]["access_key"] == "minioadmin"


def test_outputs_other_stacks_use(deployed):
    env, d = deployed
    o = d.outputs
    host = "localhost" if env == "dev" else "ai-meeting.com"
    assert o["public_url"] == f"https://{host}"
    assert o["api_url"] == f"https://{host}/api" and o["websocket_url"] == f"wss://{host}/ws/"
    assert o["health_url"].endswith("/health") and o["api_replicas"] == (3 if env == "prod" else 1)
    assert o["internal_endpoints"]["postgres"] == "postgres:5432"


def test_dev_and_prod_differ_where_they_should(deployed):
    env, d = deployed
    rec = d.recorder
    provider = rec.of_type("providers:docker")
    assert len(provider) == 1
    bootstrap = [r for r in rec.of_type("remote:Command") if r.name.startswith("bootstrap-")]
    volumes = [v for v in rec.of_type("volume:Volume") if v.name.endswith("-data")]
    assert {v.name for v in volumes} == {"postgres-data", "redis-data", "minio-data"}
    if env == "dev":
        assert provider[0].inputs["host"] == "unix:///var/run/docker.sock"
        assert not bootstrap and not rec.of_type("remote:Command")
        assert rec.of_type("selfSignedCert:SelfSignedCert")
        assert all(not v.inputs.get("driverOpts") for v in volumes)
    else:
        assert provider[0].inputs["host"] == "ssh://deploy@203.0.113.10:22"
        assert "-i" in provider[0].inputs["sshOpts"]
        names = [b.name for b in bootstrap]
        for step in ("bootstrap-packages", "bootstrap-docker", "bootstrap-firewall", "bootstrap-hardening", "bootstrap-preflight"):
            assert step in names
        assert not rec.of_type("selfSignedCert:SelfSignedCert")
        assert any(r.name == "certbot-issue" for r in rec.of_type("remote:Command"))
        assert any(r.name == "backup-install" for r in rec.of_type("remote:Command"))
        assert all(v.inputs["driverOpts"]["device"].startswith("/opt/ai-meeting/data/") for v in volumes)


def test_bootstrap_steps_carry_their_script_hash():
    import hashlib

    d = deploy(config("prod"))
    machine_id = MOCK_MACHINE_ID
    for step in [r for r in d.recorder.of_type("remote:Command") if r.name.startswith("bootstrap-")]:
        assert step.inputs["triggers"] == [hashlib.sha256(step.inputs["stdin"].encode()).hexdigest(), machine_id]
        assert step.inputs["create"] == "sudo -n bash -s"


def test_every_step_on_the_server_runs_again_on_a_new_server(monkeypatch):
    """Disaster recovery: the server's machine id is in every remote command's and image
    upload's triggers, so a new server at the same address gets all of them again."""
    machine_id = MOCK_MACHINE_ID
    import components.images

    monkeypatch.setattr(components.images, "local_image_id", lambda ref: "sha256:" + "0" * 64)
    d = deploy(config("prod", images={"upload": True, "pull": False}))
    remote = d.recorder.of_type("remote:Command")
    uploads = [r for r in d.recorder.of_type("local:Command") if r.name.endswith("-image-upload")]
    assert remote and uploads
    assert all(machine_id in (r.inputs.get("triggers") or []) for r in remote + uploads), \
        [r.name for r in remote + uploads if machine_id not in (r.inputs.get("triggers") or [])]


def test_ssh_key_file_is_private(tmp_path, monkeypatch):
    monkeypatch.setenv("AI_MEETING_CACHE", str(tmp_path))
    deploy(config("prod"))
    key = tmp_path / "ssh" / "prod" / "id_deploy"
    assert key.exists() and (key.stat().st_mode & 0o777) == 0o600
    assert (key.parent.stat().st_mode & 0o777) == 0o700


def test_api_environment_is_complete_and_pure():
    env = api_environment(config(), ApiSecrets("db", "rd", "mi", "tu", "jw", "sm"))
    assert [k for k in SEED_ENV_KEYS if k not in env] == []
    assert env["MINIO_ENDPOINT"] == "minio:9000" and env["MINIO_BUCKET"] == "ai-meeting-recordings"
    assert env["ENABLE_METRICS"] == "true" and env["METRICS_PORT"] == "9090"


def test_monitoring_adds_grafana_on_3002():
    d = deploy(config(monitoring={"enabled": True}))
    grafana = d.recorder.named("grafana")
    assert grafana.inputs["ports"][0]["external"] == 3002 and grafana.inputs["ports"][0]["ip"] == "127.0.0.1"
    assert d.outputs["grafana_url"] == "http://127.0.0.1:3002"
    assert "grafana_admin_password" in d.secret_outputs


def test_container_inputs_holding_secrets_are_secret_in_state(deployed):
    _, d = deployed
    for name in ("postgres", "redis", "minio", "api-1"):
        c = d.recorder.named(name)
        assert "envs" in c.secret_inputs, f"{name}: its env holds a password and must be encrypted in state"
    nginx = d.recorder.named("nginx")
    if any(u["file"].endswith("privkey.pem") for u in d.recorder.uploads_of(nginx)):
        carrier = d.recorder.named("nginx-files")  # the files of a read-only container
        assert any(p.startswith("uploads") for p in carrier.secret_inputs)


def test_rotation_regenerates_one_secret_and_syncs_postgres():
    before = deploy(config())
    after = deploy(config(rotation={"db_password": 1}))
    keepers = lambda d, n: d.recorder.named(n).inputs["keepers"]  # noqa: E731
    assert keepers(before, "db-password") == {"rotation": "0"} and keepers(after, "db-password") == {"rotation": "1"}
    assert keepers(after, "redis-password") == {"rotation": "0"}
    sync = after.recorder.named("postgres-password-sync")
    assert "1" in sync.inputs["triggers"]
    # The password comes from the container's environment: no secret in the command's inputs.
    assert "$POSTGRES_PASSWORD" in sync.inputs["stdin"] and "Ab1Ab1" not in sync.inputs["stdin"]
    assert "ALTER ROLE" in sync.inputs["stdin"] and "ALTER" not in sync.inputs["create"]


def test_prod_protects_data_and_secrets_dev_does_not():
    # Protection is a resource option, not an input: check it on the objects the program built.
    import pulumi

    from components.stack import AiMeetingStack

    for env, expected in (("dev", False), ("prod", True)):
        cfg = config(env)
        seen: dict[str, bool] = {}

        def record(args: pulumi.ResourceTransformationArgs):
            if args.type_ == "random:index/randomPassword:RandomPassword" or args.name.endswith("-data"):
                seen[args.name] = bool(args.opts.protect)
            return None

        from tests.unit.harness import Recorder

        pulumi.runtime.set_mocks(Recorder(), project="ai-meeting", stack=env, preview=False)

        @pulumi.runtime.test
        def run():
            AiMeetingStack("ai-meeting", cfg, pulumi.ResourceOptions(transformations=[record]))

        run()
        assert seen and all(v is expected for v in seen.values()), (env, seen)


def test_image_upload_copies_images_to_the_server_before_use(monkeypatch, tmp_path):
    monkeypatch.setenv("AI_MEETING_CACHE", str(tmp_path))
    monkeypatch.setattr("components.images.local_image_id", lambda ref: f"sha256:local-{ref}")
    d = deploy(config("prod", images={"pull": False, "upload": True}))
    uploads = [r for r in d.recorder.of_type("local:Command") if r.name.endswith("-image-upload")]
    assert sorted(u.name for u in uploads) == sorted(f"{s}-image-upload" for s in ("postgres", "redis", "minio", "nginx", "api", "web"))
    for u in uploads:
        assert "docker save" in u.inputs["create"] and "docker load" in u.inputs["create"]
        assert u.inputs["triggers"][0].startswith("sha256:local-")
    assert any("images.upload" in p for p in _problems({"images": {"upload": True}}))


def _problems(raw):
    from config import ConfigError, validate_config

    try:
        validate_config({"environment": "dev", **raw}, "dev")
    except ConfigError as e:
        return e.problems
    return []


def test_server_side_ssh_port_opens_the_firewall_for_it():
    from components.assembly import ssh_bootstrap_args

    s = ssh_bootstrap_args(config("prod", target={"kind": "ssh", "host": "127.0.0.1", "port": 2222, "private_key": FAKE_PEM}, bootstrap={"ssh_port": 22})).settings
    assert s.ssh_port == 22 and 2222 not in s.allowed_tcp_ports


def test_nginx_waits_for_the_certificate(tmp_path, monkeypatch):
    """nginx mounts or uploads the certificate: it must not be created before it exists."""
    import pulumi

    from components.stack import AiMeetingStack
    from tests.unit.harness import Recorder

    monkeypatch.setenv("AI_MEETING_CACHE", str(tmp_path))
    for env, cert_resource in (("dev", "tls-cert"), ("prod", "certbot-issue")):
        nginx_deps: list = []

        def record(args: pulumi.ResourceTransformationArgs):
            if args.type_ == "docker:index/container:Container" and args.name == "nginx":
                nginx_deps.extend(args.opts.depends_on or [])
            return None

        pulumi.runtime.set_mocks(Recorder(), project="ai-meeting", stack=env, preview=False)

        @pulumi.runtime.test
        def run():
            AiMeetingStack("ai-meeting", config(env), pulumi.ResourceOptions(transformations=[record]))

        run()
        names = [getattr(d, "_name", None) for d in nginx_deps]
        assert cert_resource in names, (env, names)


def test_generated_secrets_have_no_secret_in_their_resource_id(deployed):
    """RandomBytes and RandomId use the value itself as their resource id, and ids are stored
    unencrypted: every generated secret must be a RandomPassword (id "none")."""
    _, d = deployed
    kinds = {r.typ for r in d.recorder.resources if r.typ.startswith("random:")}
    assert kinds == {"random:index/randomPassword:RandomPassword"}, kinds


def test_every_container_is_least_privileged_and_gets_its_pids_limit(deployed):
    env, d = deployed
    script = d.recorder.named("pids-limits").inputs["create"]
    for c in d.recorder.containers():
        assert c.inputs["securityOpts"] == ["no-new-privileges:true"], c.name
        assert c.inputs["capabilities"]["drops"] == ["ALL"], c.name
        assert c.inputs["readOnly"] is True, c.name
        assert re.search(rf"update --pids-limit \d+ {re.escape(c.name)}-id >", script), f"{c.name} has no pids limit"
    assert "--pids-limit 512 postgres-id" in script and "--pids-limit 128 nginx-id" in script
    nginx = d.recorder.named("nginx")
    # As the engine reads them back, or every refresh would see drift.
    assert nginx.inputs["capabilities"]["adds"] == ["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_SETGID", "CAP_SETUID"]
    anonymous = [v.get("containerPath") for v in nginx.inputs["volumes"] if not v.get("volumeName") and not v.get("hostPath")]
    assert set(anonymous) == {None, "/var/cache/nginx", "/var/lib/nginx"}, "spool, and the carrier's volumes"
    # Docker refuses uploads into a read-only container: nginx.conf is in a never-started
    # carrier's volume over /etc/nginx, mounted read-only, with the upstreams' mount point.
    assert not nginx.inputs.get("uploads")
    (carrier,) = [c for c in d.recorder.file_carriers() if c.name == "nginx-files"]
    assert carrier.inputs["start"] is False and carrier.inputs["mustRun"] is False and carrier.inputs["networkMode"] == "none"
    # Explicit, or it reads back daemon.json's defaults and the next `up` replaces it.
    assert carrier.inputs["logOpts"] == nginx.inputs["logOpts"] and carrier.inputs["logDriver"] == "json-file"
    assert [v["containerPath"] for v in carrier.inputs["volumes"]] == ["/etc/nginx"]
    assert {"from_container": "nginx-files-id:ro"} == {"from_container": v["fromContainer"] for v in nginx.inputs["volumes"]
                                                        if v.get("fromContainer")}
    assert "/etc/nginx/upstreams/.mountpoint" in {u["file"] for u in carrier.inputs["uploads"]}


def test_a_never_healthy_api_replica_fails_when_its_healthcheck_gives_up(tmp_path, monkeypatch):
    """The provider waits for "healthy" only: the API's wait ends when Docker has declared the
    replica unhealthy (20 s start period + 15 probes 2 s apart + a 5 s timeout), not at
    api.start_timeout; the datastores keep their long first-start wait."""
    monkeypatch.setenv("AI_MEETING_CACHE", str(tmp_path))
    d = deploy(config("dev"))
    waits = {c.name: c.inputs.get("waitTimeout") for c in d.recorder.of_type("container:Container")}
    assert waits["api-1"] == 55, waits
    assert waits["postgres"] == 300, waits
    slow = deploy(config("dev", api={"start_period": 90, "start_timeout": 100}))
    assert {c.name: c.inputs.get("waitTimeout") for c in slow.recorder.of_type("container:Container")}["api-1"] == 100


def test_the_machine_id_is_read_once_and_a_failed_login_fails_the_run(monkeypatch):
    import subprocess

    import pulumi

    from components import target as target_module
    from components.target import HostShell, server_identity, ssh_connection

    cfg = config("prod")
    shell = HostShell(cfg.target, ssh_connection(cfg.target), "prod")
    answers = iter([subprocess.CompletedProcess([], 0, "0123456789abcdef0123456789abcdef\n", ""),
                    subprocess.CompletedProcess([], 0, "\n", ""),
                    subprocess.CompletedProcess([], 255, "", "ssh: connect to host 203.0.113.10 port 22: timed out")])
    monkeypatch.setattr(target_module.HostShell, "run_now", lambda self, script, timeout=60: next(answers))
    assert server_identity(shell) == "0123456789abcdef0123456789abcdef"
    assert server_identity(shell) == ""  # no machine id on that server: stable, nothing depends on it
    with pytest.raises(pulumi.RunError, match="exit 255"):
        server_identity(shell)
    assert server_identity(HostShell(config("dev").target, None, "dev")) == ""
