"""Each policy of the pack, run through the real pulumi-policy objects without the engine."""

import pytest

from ai_meeting_policy import rules
from ai_meeting_policy.pack import build_policies, make_ctx
from ai_meeting_policy.testing import run_policy, run_stack_policy

POLICIES = {p.name: p for p in build_policies()}
C = rules.CONTAINER


def labels(service, kind="service"):
    return [{"label": "ai-meeting.service", "value": service},
            {"label": "ai-meeting.kind", "value": kind}]


def good_container(service="api", **overrides):
    props = {
        "name": service,
        "image": "ai-meeting/api:1.4.2",
        "labels": labels(service),
        "ports": [{"internal": 3000, "external": 3000, "ip": "127.0.0.1"}],
        "healthcheck": {"tests": ["CMD", "curl", "-f", "http://localhost:3000/health"],
                        "interval": "10s"},
        "restart": "unless-stopped",
        "cpus": "2",
        "memory": 2048,
        "logDriver": "json-file",
        "logOpts": {"max-size": "10m", "max-file": "3"},
        "wait": True,
    }
    props.update(overrides)
    return {k: v for k, v in props.items() if v is not None}


def violations(policy, *args, **kwargs):
    return [m for m, _ in run_policy(POLICIES[policy], *args, **kwargs)]


def test_pack_has_every_rule_and_is_mandatory_by_default(monkeypatch):
    monkeypatch.delenv("AI_MEETING_POLICY_ENFORCEMENT", raising=False)
    from ai_meeting_policy.pack import default_enforcement
    from pulumi_policy import EnforcementLevel
    assert default_enforcement() == EnforcementLevel.MANDATORY
    assert set(POLICIES) == {
        "ports-loopback-only", "container-healthcheck", "container-restart-policy",
        "container-resource-limits", "container-log-rotation", "image-pinned-tag",
        "password-min-length", "service-secrets-as-files", "prod-stateful-protected",
        "prod-tls-required", "preview-unknowns"}
    assert POLICIES["preview-unknowns"].enforcement_level == EnforcementLevel.ADVISORY
    assert all(p.enforcement_level is None for n, p in POLICIES.items() if n != "preview-unknowns")


def test_pack_version_is_the_one_in_pulumipolicy_yaml():
    from ai_meeting_policy.pack import PACK_DIR, pack_version
    text = (PACK_DIR / "PulumiPolicy.yaml").read_text()
    assert pack_version() == "0.1.0" and "\nversion: 0.1.0\n" in text


@pytest.mark.parametrize("name", sorted(rules.RESOURCE_RULES))
def test_a_well_formed_container_passes_every_resource_policy(name):
    assert violations(name, C, good_container(), name="api-1") == []


# ---------------------------------------------------------------- ports


def test_published_db_port_is_named_with_resource_and_rule():
    props = good_container("postgres", ports=[{"internal": 5432, "external": 5432, "ip": "0.0.0.0"}])
    out = run_policy(POLICIES["ports-loopback-only"], C, props, name="postgres")
    assert len(out) == 1
    message, urn = out[0]
    assert "[ports-loopback-only]" in message and "'postgres'" in message and "0.0.0.0" in message
    assert urn == "urn:pulumi:dev::ai-meeting::docker:index/container:Container::postgres"
    assert urn in message


def test_port_without_ip_defaults_to_all_interfaces():
    props = good_container("redis", ports=[{"internal": 6379, "external": 6379}])
    [msg] = violations("ports-loopback-only", C, props, name="redis")
    assert "no ip given" in msg


@pytest.mark.parametrize("ip", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_ports_pass(ip):
    props = good_container("minio", ports=[{"internal": 9000, "external": 9000, "ip": ip}])
    assert violations("ports-loopback-only", C, props) == []


def test_nginx_may_publish_public_ports():
    props = good_container("nginx", ports=[{"internal": 80, "external": 80, "ip": "0.0.0.0"},
                                           {"internal": 443, "external": 443, "ip": "0.0.0.0"}])
    assert violations("ports-loopback-only", C, props, name="nginx") == []


def test_a_container_named_nginx_without_the_label_is_not_exempt():
    props = good_container("api", name="nginx", ports=[{"internal": 80, "external": 80}])
    assert len(violations("ports-loopback-only", C, props, name="nginx")) == 1


def test_publish_all_ports_and_host_network_are_violations():
    assert violations("ports-loopback-only", C, good_container(publishAllPorts=True))
    assert violations("ports-loopback-only", C, good_container(networkMode="host"))


# ---------------------------------------------------------------- container hygiene


def test_missing_healthcheck():
    [msg] = violations("container-healthcheck", C, good_container(healthcheck=None), name="api-2")
    assert "[container-healthcheck]" in msg and "'api-2'" in msg


def test_healthcheck_none_is_missing():
    assert violations("container-healthcheck", C, good_container(healthcheck={"tests": ["NONE"]}))


def test_jobs_are_exempt_from_long_running_rules():
    job = {"image": "ai-meeting/api:1.4.2", "labels": labels("migrate", "job"), "mustRun": False}
    for name in ("container-healthcheck", "container-restart-policy",
                 "container-resource-limits", "container-log-rotation"):
        assert violations(name, C, job) == [], name


def test_file_carriers_are_exempt_but_a_service_labelled_files_would_not_pass_unnoticed():
    # The never-started carrier of a read-only container's files (components/on_server.py).
    carrier = {"image": "ai-meeting/nginx:1.22", "labels": labels("nginx", "files"), "mustRun": False, "start": False}
    for name in ("container-healthcheck", "container-restart-policy",
                 "container-resource-limits", "container-log-rotation"):
        assert violations(name, C, carrier) == [], name
    assert violations("container-healthcheck", C, {"image": "x/y:1", "labels": labels("nginx", "service")})


def test_unlabelled_container_is_long_running_unless_must_run_false():
    bare = {"image": "x/y:1"}
    assert violations("container-healthcheck", C, bare)
    assert violations("container-healthcheck", C, {**bare, "mustRun": False}) == []


@pytest.mark.parametrize("restart", [None, "no", ""])
def test_restart_policy_required(restart):
    [msg] = violations("container-restart-policy", C, good_container(restart=restart))
    assert "[container-restart-policy]" in msg


@pytest.mark.parametrize("restart", ["always", "unless-stopped", "on-failure"])
def test_restart_policies_accepted(restart):
    assert violations("container-restart-policy", C, good_container(restart=restart)) == []


def test_limits_required():
    [msg] = violations("container-resource-limits", C, good_container(cpus=None, memory=0))
    assert "cpus or memory" in msg
    [msg] = violations("container-resource-limits", C, good_container(memory=None))
    assert "no memory limit" in msg


def test_snake_case_props_are_read_too():
    props = good_container()
    props.pop("logDriver"), props.pop("logOpts")
    props.update(log_driver="json-file", log_opts={"max-size": "10m", "max-file": "3"})
    assert violations("container-log-rotation", C, props) == []


def test_log_rotation():
    assert violations("container-log-rotation", C, good_container(logDriver=None))
    assert violations("container-log-rotation", C, good_container(logDriver="syslog"))
    [msg] = violations("container-log-rotation", C, good_container(logOpts={"max-size": "10m"}))
    assert "max-file" in msg
    assert violations("container-log-rotation", C, good_container(logDriver="local", logOpts=None)) == []


# ---------------------------------------------------------------- images


@pytest.mark.parametrize("ref,ok", [
    ("postgres:14.11", True),
    ("localhost:5000/ai-meeting/api:1.2.3", True),
    ("registry.internal:5000/api@sha256:" + "a" * 64, True),
    ("sha256:" + "b" * 64, True),
    ("postgres", False),
    ("postgres:latest", False),
    ("localhost:5000/ai-meeting/api", False),
    ("", False),
])
def test_image_problem(ref, ok):
    assert (rules.image_problem(ref) is None) is ok


def test_untagged_container_image_named():
    [msg] = violations("image-pinned-tag", C, good_container(image="nginx"), name="nginx")
    assert "[image-pinned-tag]" in msg and "'nginx'" in msg and "no tag" in msg


def test_latest_remote_image():
    [msg] = violations("image-pinned-tag", rules.REMOTE_IMAGE, {"name": "redis:latest"}, name="redis-image")
    assert "latest" in msg and "'redis-image'" in msg


def test_built_image_name():
    assert violations("image-pinned-tag", rules.BUILT_IMAGE, {"imageName": "ai-meeting/web"})
    assert violations("image-pinned-tag", rules.BUILT_IMAGE, {"imageName": "ai-meeting/web:2"}) == []


# ---------------------------------------------------------------- passwords


def test_password_length():
    [msg] = violations("password-min-length", rules.RANDOM_PASSWORD, {"length": 16}, name="db-password")
    assert "[password-min-length]" in msg and "'db-password'" in msg and "16" in msg
    assert violations("password-min-length", rules.RANDOM_PASSWORD, {"length": 32}) == []
    assert violations("password-min-length", rules.RANDOM_PASSWORD, {"length": 64}) == []
    assert violations("password-min-length", rules.RANDOM_PASSWORD, {"length": 40},
                      config={"minLength": 48})


# ---------------------------------------------------------------- prod protection

DATA_VOLUME = {"name": "ai-meeting-postgres-data",
               "labels": [{"label": "ai-meeting.data", "value": "true"}]}


def test_prod_data_volume_must_be_protected():
    [msg] = violations("prod-stateful-protected", rules.VOLUME, DATA_VOLUME,
                       name="postgres-data", stack="prod")
    assert "[prod-stateful-protected]" in msg and "'postgres-data'" in msg and "prod" in msg
    assert violations("prod-stateful-protected", rules.VOLUME, DATA_VOLUME,
                      name="postgres-data", stack="prod", protect=True) == []


def test_prod_secret_must_be_protected():
    [msg] = violations("prod-stateful-protected", rules.RANDOM_PASSWORD, {"length": 32},
                       name="jwt-secret", stack="prod")
    assert "secret" in msg and "'jwt-secret'" in msg


def test_dev_need_not_protect():
    assert violations("prod-stateful-protected", rules.VOLUME, DATA_VOLUME, stack="dev") == []
    assert violations("prod-stateful-protected", rules.RANDOM_PASSWORD, {"length": 32}, stack="dev") == []


def test_non_data_volume_is_not_stateful():
    vol = {"labels": [{"label": "ai-meeting.data", "value": "false"}]}
    assert violations("prod-stateful-protected", rules.VOLUME, vol, stack="prod") == []


def test_environment_from_policy_config_overrides_stack_name():
    assert violations("prod-stateful-protected", rules.VOLUME, DATA_VOLUME, stack="live",
                      config={"environment": "prod"})
    assert violations("prod-stateful-protected", rules.VOLUME, DATA_VOLUME, stack="live",
                      config={"prodStacks": ["live"]})
    assert violations("prod-stateful-protected", rules.VOLUME, DATA_VOLUME, stack="prod",
                      config={"environment": "dev"}) == []


@pytest.mark.parametrize("stack,config,environ,expected", [
    ("prod", {}, {}, "prod"),
    ("prod-eu", {}, {}, "prod"),
    ("dev", {}, {}, "dev"),
    ("staging", {}, {}, "staging"),
    ("live", {"prodStacks": ["live"]}, {}, "prod"),
    ("dev", {}, {"AI_MEETING_ENVIRONMENT": "prod"}, "prod"),
    ("dev", {"environment": "staging"}, {"AI_MEETING_ENVIRONMENT": "prod"}, "staging"),
])
def test_resolve_environment(stack, config, environ, expected):
    assert rules.resolve_environment(config, stack, environ) == expected


def test_make_ctx_reads_stack_and_config_from_engine_env():
    ctx = make_ctx({}, environ={"PULUMI_STACK": "prod",
                                "PULUMI_CONFIG": '{"ai-meeting:tls": "{\\"mode\\": \\"letsencrypt\\"}"}'},
                   stack="prod")
    assert ctx.is_prod and rules.tls_settings(ctx.stack_config) == {"mode": "letsencrypt"}


# ---------------------------------------------------------------- prod TLS

NGINX_TLS = good_container("nginx", ports=[{"internal": 80, "external": 80, "ip": "0.0.0.0"},
                                           {"internal": 443, "external": 443, "ip": "0.0.0.0"}])
NGINX_PLAIN = good_container("nginx", ports=[{"internal": 80, "external": 80, "ip": "0.0.0.0"}])
CERT = (rules.SELF_SIGNED_CERT, "tls-cert", {"validityPeriodHours": 8760})


def tls_violations(resources, **kwargs):
    return [m for m, _ in run_stack_policy(POLICIES["prod-tls-required"], resources, **kwargs)]


def test_prod_tls_ok():
    assert tls_violations([(C, "nginx", NGINX_TLS)], stack="prod",
                          stack_config={"ai-meeting:tls": '{"mode": "letsencrypt"}'}) == []


def test_prod_self_signed_cert_resource_is_refused():
    out = run_stack_policy(POLICIES["prod-tls-required"], [(C, "nginx", NGINX_TLS), CERT], stack="prod")
    [(msg, urn)] = out
    assert "[prod-tls-required]" in msg and "'tls-cert'" in msg
    assert urn and urn.endswith("::tls-cert")


def test_prod_self_signed_mode_is_refused_unless_allowed():
    cfg = {"ai-meeting:tls": '{"mode": "self-signed"}'}
    assert tls_violations([(C, "nginx", NGINX_TLS)], stack="prod", stack_config=cfg)
    allowed = {"ai-meeting:tls": '{"mode": "self-signed", "allow_self_signed_in_prod": true}'}
    assert tls_violations([(C, "nginx", NGINX_TLS), CERT], stack="prod", stack_config=allowed) == []
    assert tls_violations([(C, "nginx", NGINX_TLS), CERT], stack="prod",
                          config={"allowSelfSignedInProd": True}) == []


def test_prod_tls_off_is_refused():
    [msg] = tls_violations([(C, "nginx", NGINX_PLAIN)], stack="prod")
    assert "does not publish 443" in msg and "'nginx'" in msg
    [msg] = tls_violations([(C, "nginx", NGINX_TLS)], stack="prod",
                           stack_config={"ai-meeting:tls": '{"mode": "off"}'})
    assert "'off'" in msg


def test_prod_self_signed_allowed_by_the_programs_top_level_key():
    cfg = {"ai-meeting:tls": '{"mode": "self-signed"}', "ai-meeting:allow_self_signed_in_prod": "true"}
    assert tls_violations([(C, "nginx", NGINX_TLS), CERT], stack="prod", stack_config=cfg) == []


def test_prod_tls_config_read_under_the_running_project(monkeypatch):
    ctx = rules.Ctx(stack="prod", environment="prod", project="other",
                    stack_config={"other:tls": '{"mode": "off"}'})
    [msg] = list(rules.check_prod_tls([], ctx))
    assert "'off'" in msg


def test_dev_may_use_self_signed_and_plain_http():
    assert tls_violations([(C, "nginx", NGINX_PLAIN), CERT], stack="dev",
                          stack_config={"ai-meeting:tls": '{"mode": "self-signed"}'}) == []


# ---------------------------------------------------------------- unknown values (preview)
# The engine sends values it does not know yet (computed from other resources' outputs) as
# sentinels; a rule decides from what is known, or the advisory preview-unknowns says it could
# not. No mandatory rule reports a violation on an unknown, none passes one silently.

U = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
RI = rules.REMOTE_IMAGE


def unknown_notes(resources, **kwargs):
    return [m for m, _ in run_stack_policy(POLICIES["preview-unknowns"], resources, **kwargs)]


@pytest.mark.parametrize("policy,overrides,what", [
    ("container-healthcheck", {"healthcheck": U}, "healthcheck"),
    ("container-healthcheck", {"healthcheck": {"tests": U}}, "healthcheck.tests"),
    ("container-healthcheck", {"healthcheck": {"tests": [U, "x"]}}, "healthcheck.tests[0]"),
    ("container-restart-policy", {"restart": U}, "restart"),
    ("container-resource-limits", {"cpus": U}, "cpus"),
    ("container-resource-limits", {"memory": U}, "memory"),
    ("container-log-rotation", {"logDriver": U}, "log_driver"),
    ("container-log-rotation", {"logOpts": U}, "log_opts"),
    ("container-log-rotation", {"logOpts": {"max-size": U, "max-file": "3"}}, "max-size"),
    ("ports-loopback-only", {"ports": U}, "ports"),
    ("ports-loopback-only", {"ports": [{"internal": 1, "external": 1, "ip": U}]}, "ports[0].ip"),
    ("ports-loopback-only", {"publishAllPorts": U}, "publish_all_ports"),
    ("ports-loopback-only", {"networkMode": U}, "network_mode"),
    ("image-pinned-tag", {"image": U}, "image"),
])
def test_an_unknown_property_is_deferred_and_said(policy, overrides, what):
    props = good_container(**overrides)
    reasons = []
    assert run_policy(POLICIES[policy], C, props, name="api-1", not_applicable=reasons) == []
    # not applicable now, so the engine does not count the policy as passed for this resource
    assert len(reasons) == 1 and what in reasons[0], reasons
    notes = unknown_notes([(C, "api-1", props)])
    mine = [n for n in notes if n.startswith(f"[{policy}] 'api-1'")]
    assert len(mine) == 1 and what in mine[0] and "not known during preview" in mine[0], notes


def test_a_well_formed_container_has_nothing_deferred():
    assert unknown_notes([(C, "api-1", good_container())]) == []


def test_an_image_id_from_a_remote_image_is_decided_by_the_remote_images_name():
    container = good_container(image=U)
    pinned = (RI, "api-image", {"name": "ai-meeting/api:1.4.2", "imageId": U})
    assert unknown_notes([pinned, (C, "api-1", container, {"image": ["api-image"]})]) == []
    assert violations("image-pinned-tag", RI, {"name": "ai-meeting/api:latest"}, name="api-image")
    # computed from something else: said, not passed
    other = ("random:index/randomString:RandomString", "tag", {"result": U})
    [note] = unknown_notes([other, (C, "api-1", container, {"image": ["tag"]})])
    assert note.startswith("[image-pinned-tag] 'api-1'")


def test_a_literal_unpinned_image_is_refused_even_beside_a_remote_image():
    container = good_container(image="ai-meeting/api")
    assert violations("image-pinned-tag", C, container, name="api-1")


def test_unknown_remote_image_name_and_password_length_are_said():
    notes = unknown_notes([(RI, "api-image", {"name": U}),
                           (rules.RANDOM_PASSWORD, "db-password", {"length": U})])
    assert any(n.startswith("[image-pinned-tag] 'api-image'") for n in notes)
    assert any(n.startswith("[password-min-length] 'db-password'") for n in notes)
    assert violations("password-min-length", rules.RANDOM_PASSWORD, {"length": U}) == []


def test_unknown_labels_decide_when_they_can():
    loopback = good_container(labels=U)
    assert violations("ports-loopback-only", C, loopback) == []
    assert [n for n in unknown_notes([(C, "api-1", loopback)]) if "ports-loopback-only" in n] == []
    public = good_container(labels=U, ports=[{"internal": 80, "external": 80, "ip": "0.0.0.0"}])
    assert violations("ports-loopback-only", C, public) == []
    assert any("[ports-loopback-only]" in n and "ai-meeting.service" in n
               for n in unknown_notes([(C, "nginx", public)]))
    # a missing healthcheck matters unless the container is a job: not known -> said
    no_hc = good_container(labels=[{"label": "ai-meeting.kind", "value": U}], healthcheck=None)
    assert violations("container-healthcheck", C, no_hc) == []
    assert any("[container-healthcheck]" in n and "ai-meeting.kind" in n
               for n in unknown_notes([(C, "x", no_hc)]))
    # one unknown label among known ones does not hide a known service label
    mixed = good_container("postgres", ports=[{"internal": 5432, "external": 5432}])
    mixed["labels"] = mixed["labels"] + [{"label": U, "value": "x"}]
    assert violations("ports-loopback-only", C, mixed)


def test_unknown_data_label_in_prod_is_said():
    vol = {"labels": [{"label": "ai-meeting.data", "value": U}]}
    assert violations("prod-stateful-protected", rules.VOLUME, vol, stack="prod") == []
    assert any("[prod-stateful-protected]" in n for n in
               unknown_notes([(rules.VOLUME, "v", vol)], stack="prod"))


def test_prod_tls_with_unknown_nginx_ports_is_said():
    nginx = good_container("nginx", ports=U)
    cfg = {"ai-meeting:tls": '{"mode": "letsencrypt"}'}
    assert tls_violations([(C, "nginx", nginx)], stack="prod", stack_config=cfg) == []
    [note] = unknown_notes([(C, "nginx", nginx)], stack="prod", stack_config=cfg)
    assert note.startswith("[prod-tls-required] 'nginx'") and "443" in note


def test_a_rule_tripping_over_an_unknown_is_deferred_not_passed():
    def sloppy(res, ctx):
        if rules.prop(res.props, "restart"):  # UNKNOWN in a truth test
            yield "never"
    res = rules.Res(C, "x", {"restart": rules.UNKNOWN})
    [out] = rules._outcomes(sloppy, "container-restart-policy", res.ref, res, rules.Ctx())
    assert isinstance(out, rules.Deferred)


def test_plain_reads_the_sdks_unknown_checking_proxy():
    from pulumi_policy.proxy import unknown_checking_proxy
    from ai_meeting_policy.pack import plain
    proxied = unknown_checking_proxy({"image": U, "ports": [{"ip": U, "internal": 1}], "labels": U,
                                      "envs": ["A=1", U]})
    assert plain(proxied) == {"image": rules.UNKNOWN, "ports": [{"ip": rules.UNKNOWN, "internal": 1}],
                              "labels": rules.UNKNOWN, "envs": ["A=1", rules.UNKNOWN]}


def test_a_rule_is_not_applicable_where_it_judges_nothing():
    def reasons(policy, typ, props, **kwargs):
        out = []
        assert run_policy(POLICIES[policy], typ, props, not_applicable=out, **kwargs) == []
        return out
    assert reasons("password-min-length", C, good_container()) == ["judges RandomPassword resources only"]
    assert reasons("container-healthcheck", rules.VOLUME, DATA_VOLUME) == ["judges Container, Service resources only"]
    assert reasons("prod-stateful-protected", rules.VOLUME, DATA_VOLUME, stack="dev") == [
        "stack dev is dev, not prod"]
    job = {"image": "x/y:1", "labels": labels("migrate", "job")}
    assert reasons("container-healthcheck", C, job) == ["a one-shot job, not a long-running container"]
    assert reasons("container-healthcheck", C, good_container()) == []
    assert reasons("image-pinned-tag", rules.REMOTE_IMAGE, {"name": "a/b:1"}) == []
