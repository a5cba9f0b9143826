"""The pack's rules on a `docker.Service` (target.kind swarm), through the real pulumi-policy
objects without the engine: one passing and one failing case per rule.

The properties are shaped as the engine sends a Service's inputs to an analyzer: camelCase
nested objects (`taskSpec.containerSpec.image`), maps with their own keys (`max-size`), labels
as `[{label, value}]`, and numbers as floats (they travel as protobuf Struct numbers), as
pulumi-docker 4.11's schema (docker:index/service:Service) and components/swarm_services.py
declare them.
"""

import copy
import json
from pathlib import Path

import pytest

from ai_meeting_policy import rules
from ai_meeting_policy.pack import build_policies
from ai_meeting_policy.testing import run_policy, run_stack_policy

POLICIES = {p.name: p for p in build_policies()}
S = rules.SERVICE
RI = rules.REMOTE_IMAGE
U = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # the engine's unknown sentinel
IMAGES = {"postgres": "postgres:15.6-alpine", "redis": "redis:7.2.4-alpine", "minio": "minio/minio:RELEASE.2024-06-13T22-53-53Z",
          "api": "ghcr.io/your-org/ai-meeting/api:0.1.0", "web": "ghcr.io/your-org/ai-meeting/web:0.1.0",
          "nginx": "nginx:1.25.4-alpine"}
DATA_DIRS = {"postgres": "/var/lib/postgresql/data", "redis": "/data", "minio": "/data"}


def good_service(service="api", **task_overrides):
    """A service as components/swarm_services.py declares it; `task_overrides` replace keys of
    taskSpec (None removes one)."""
    labels = [{"label": "ai-meeting.service", "value": service}, {"label": "ai-meeting.stack", "value": "prod"}]
    container_spec = {
        "image": IMAGES[service],
        "env": {"TZ": "UTC"},
        "healthcheck": {"tests": ["CMD-SHELL", "curl -fsS http://127.0.0.1:3000/health >/dev/null"],
                        "interval": "2s", "timeout": "5s", "startPeriod": "10s", "retries": 15.0},
        "stopGracePeriod": "30s",
        "labels": [{"label": "ai-meeting.service", "value": service}],
    }
    task = {
        "containerSpec": container_spec,
        "resources": {"limits": {"nanoCpus": 1000000000.0, "memoryBytes": 536870912.0}},
        "restartPolicy": {"condition": "any", "delay": "2s", "window": "30s"},
        "logDriver": {"name": "json-file", "options": {"max-size": "20m", "max-file": "5"}},
        "networksAdvanceds": [{"name": "ai-meeting-network", "aliases": [service]}],
    }
    props = {
        "name": f"ai-meeting-{service}",
        "labels": labels,
        "taskSpec": task,
        "mode": {"replicated": {"replicas": 1.0 if service in DATA_DIRS else 2.0}},
        "endpointSpec": {"mode": "dnsrr"},
        "updateConfig": {"parallelism": 1.0, "delay": "2s", "failureAction": "rollback", "monitor": "15s",
                         "maxFailureRatio": "0.0", "order": "stop-first" if service in DATA_DIRS else "start-first"},
        "convergeConfig": {"delay": "2s", "timeout": "300s"},
    }
    if service in DATA_DIRS:
        container_spec["mounts"] = [{"type": "volume", "source": f"ai-meeting-{service}-data",
                                     "target": DATA_DIRS[service]}]
        task["placement"] = {"constraints": ["node.labels.ai-meeting.data==true"]}
    if service == "nginx":
        props["endpointSpec"]["ports"] = [
            {"targetPort": 80.0, "publishedPort": 80.0, "publishMode": "host", "protocol": "tcp"},
            {"targetPort": 443.0, "publishedPort": 443.0, "publishMode": "host", "protocol": "tcp"}]
        task["placement"] = {"constraints": ["node.labels.ai-meeting.edge==true"], "maxReplicas": 1.0}
    for key, value in task_overrides.items():
        if value is None:
            task.pop(key, None)
        else:
            task[key] = value
    return props


def with_spec(props, **spec):
    """A copy with keys of taskSpec.containerSpec replaced (None removes one)."""
    out = copy.deepcopy(props)
    cs = out["taskSpec"]["containerSpec"]
    for key, value in spec.items():
        if value is None:
            cs.pop(key, None)
        else:
            cs[key] = value
    return out


def violations(policy, props, **kwargs):
    kwargs.setdefault("name", props.get("name", "svc") if isinstance(props, dict) else "svc")
    return [m for m, _ in run_policy(POLICIES[policy], S, props, **kwargs)]


def reasons(policy, props, **kwargs):
    out = []
    assert violations(policy, props, not_applicable=out, **kwargs) == []
    return out


def unknown_notes(resources, **kwargs):
    return [m for m, _ in run_stack_policy(POLICIES["preview-unknowns"], resources, **kwargs)]


ALL = sorted(IMAGES)


@pytest.mark.parametrize("stack", ["dev", "prod"])
@pytest.mark.parametrize("service", ALL)
@pytest.mark.parametrize("policy", sorted(rules.RESOURCE_RULES))
def test_the_programs_services_pass_every_resource_policy(policy, service, stack):
    assert violations(policy, good_service(service), stack=stack) == []


@pytest.mark.parametrize("service", ALL)
def test_a_well_formed_service_has_nothing_deferred(service):
    assert unknown_notes([(S, service, good_service(service))], stack="prod") == []


def test_every_container_rule_judges_services():
    judged = {name for name, types in rules.RULE_TYPES.items() if rules.CONTAINER in types}
    on_services = {name for name, types in rules.RULE_TYPES.items() if S in types}
    assert on_services == judged | {"prod-stateful-protected", "service-secrets-as-files"}
    for name in on_services:
        assert reasons(name, good_service("api"), stack="prod") == [], name


# ---------------------------------------------------------------- ports: only nginx's 80/443


def test_nginx_publishes_80_and_443_in_host_mode():
    assert violations("ports-loopback-only", good_service("nginx")) == []


@pytest.mark.parametrize("service", ["postgres", "redis", "minio"])
def test_a_data_service_publishing_a_port_is_refused(service):
    props = good_service(service)
    props["endpointSpec"]["ports"] = [{"targetPort": 5432.0, "publishedPort": 5432.0, "publishMode": "host"}]
    out = run_policy(POLICIES["ports-loopback-only"], S, props, name=service)
    [(msg, urn)] = out
    assert msg.startswith("[ports-loopback-only] data service") and f"'{service}'" in msg
    assert "5432->5432" in msg and "127.0.0.1" in msg
    assert urn == f"urn:pulumi:dev::ai-meeting::docker:index/service:Service::{service}"


def test_a_data_service_publishing_even_80_is_refused():
    props = good_service("postgres")
    props["endpointSpec"]["ports"] = [{"targetPort": 80.0, "publishedPort": 8080.0}]
    [msg] = violations("ports-loopback-only", props)
    assert "data service" in msg and "8080->80 (ingress mode)" in msg


def test_api_publishing_its_port_is_refused():
    props = good_service("api")
    props["endpointSpec"]["ports"] = [{"targetPort": 3000.0}]  # no publishedPort: a random one
    [msg] = violations("ports-loopback-only", props)
    assert "service 'ai-meeting-api'" in msg and "?->3000" in msg


def test_nginx_publishing_anything_but_80_and_443_is_refused():
    props = good_service("nginx")
    props["endpointSpec"]["ports"].append({"targetPort": 9113.0, "publishedPort": 9113.0, "publishMode": "ingress"})
    [msg] = violations("ports-loopback-only", props)
    assert "9113->9113" in msg and "only 80 and 443" in msg


def test_a_service_on_the_host_network_is_refused():
    props = good_service("redis", networksAdvanceds=[{"name": "host"}])
    [msg] = violations("ports-loopback-only", props)
    assert "host network" in msg


def test_service_ports_with_unknown_labels_decide_when_they_can():
    props = good_service("nginx")
    props["labels"] = U
    # 80/443 are allowed if it is nginx: not known yet, said
    assert violations("ports-loopback-only", props) == []
    notes = unknown_notes([(S, "nginx", props)])
    assert any("[ports-loopback-only] 'nginx'" in n and "ai-meeting.service" in n for n in notes), notes
    # 5432 is refused whoever publishes it
    props["endpointSpec"]["ports"] = [{"targetPort": 5432.0, "publishedPort": 5432.0}]
    assert violations("ports-loopback-only", props)


# ---------------------------------------------------------------- long-running rules


def test_service_without_healthcheck_is_refused():
    [msg] = violations("container-healthcheck", with_spec(good_service("web"), healthcheck=None), name="web")
    assert msg.startswith("[container-healthcheck] long-running service 'web'")
    assert "task_spec.container_spec.healthcheck" in msg
    assert violations("container-healthcheck", with_spec(good_service("web"), healthcheck={"tests": ["NONE"]}))
    assert violations("container-healthcheck", with_spec(good_service("web"), healthcheck={"tests": []}))


def test_a_job_service_is_exempt_from_long_running_rules():
    job = good_service("api", resources=None, restartPolicy={"condition": "none"}, logDriver=None)
    job = with_spec(job, healthcheck=None)
    job["labels"].append({"label": "ai-meeting.kind", "value": "job"})
    for name in rules.LONG_RUNNING_RULES:
        assert reasons(name, job) == ["a one-shot job, not a long-running service"], name


@pytest.mark.parametrize("condition,ok", [("any", True), ("on-failure", True), (None, True), ("none", False)])
def test_service_restart_condition(condition, ok):
    policy = {"delay": "2s"} if condition is None else {"condition": condition}
    out = violations("container-restart-policy", good_service("api", restartPolicy=policy))
    assert (out == []) is ok, out
    if not ok:
        assert "task_spec.restart_policy.condition='none'" in out[0]
    # no restart_policy at all: Docker's default for a task is `any`
    assert violations("container-restart-policy", good_service("api", restartPolicy=None)) == []


def test_service_limits_required():
    [msg] = violations("container-resource-limits", good_service("api", resources=None))
    assert "nano_cpus or memory_bytes" in msg and "long-running service" in msg
    [msg] = violations("container-resource-limits",
                       good_service("api", resources={"limits": {"nanoCpus": 500000000.0, "memoryBytes": 0.0}}))
    assert "no memory_bytes limit" in msg
    only_reservation = {"reservation": {"nanoCpus": 1e9, "memoryBytes": 1e9}}
    assert violations("container-resource-limits", good_service("api", resources=only_reservation))


def test_service_log_rotation():
    assert violations("container-log-rotation", good_service("api", logDriver=None))  # the daemon's default
    [msg] = violations("container-log-rotation", good_service("api", logDriver={"name": "syslog"}))
    assert "task_spec.log_driver.name='syslog'" in msg
    [msg] = violations("container-log-rotation",
                       good_service("api", logDriver={"name": "json-file", "options": {"max-size": "20m"}}))
    assert "without rotation" in msg and "task_spec.log_driver.options" in msg
    assert violations("container-log-rotation", good_service("api", logDriver={"name": "local"})) == []


# ---------------------------------------------------------------- images


@pytest.mark.parametrize("image,ok", [
    ("redis:7.2.4-alpine", True),
    ("localhost:5000/ai-meeting/api:0.1.0@sha256:" + "c" * 64, True),
    ("redis", False),
    ("redis:latest", False),
    ("localhost:5000/ai-meeting/api", False),
])
def test_service_image_pinned(image, ok):
    out = violations("image-pinned-tag", with_spec(good_service("redis"), image=image), name="redis")
    assert (out == []) is ok, out
    if not ok:
        assert out[0].startswith("[image-pinned-tag] service 'redis'") and image in out[0]


def test_service_without_image_is_refused():
    [msg] = violations("image-pinned-tag", with_spec(good_service("api"), image=None))
    assert "task_spec.container_spec.image" in msg


def test_a_service_image_from_a_remote_image_is_decided_by_the_remote_images_name():
    """As for a container: an image not known in preview that comes (through taskSpec) from a
    RemoteImage of the stack is judged by the RemoteImage's name; from anything else, said."""
    svc = with_spec(good_service("api"), image=U)
    reasons_ = reasons("image-pinned-tag", svc)
    assert len(reasons_) == 1 and "task_spec.container_spec.image" in reasons_[0]
    pinned = (RI, "api-image", {"name": "ghcr.io/your-org/ai-meeting/api:0.1.0", "repoDigest": U})
    assert unknown_notes([pinned, (S, "api", svc, {"taskSpec": ["api-image"]})]) == []
    other = ("random:index/randomString:RandomString", "tag", {"result": U})
    [note] = unknown_notes([other, (S, "api", svc, {"taskSpec": ["tag"]})])
    assert note.startswith("[image-pinned-tag] 'api'") and "task_spec.container_spec.image" in note


# ---------------------------------------------------------------- prod: data services pinned on a named volume


@pytest.mark.parametrize("service", ["postgres", "redis", "minio"])
def test_a_prod_data_service_on_a_pinned_named_volume_passes(service):
    assert violations("prod-stateful-protected", good_service(service), stack="prod") == []


@pytest.mark.parametrize("mounts,words", [
    (None, "no named volume"),
    ([], "no named volume"),
    ([{"type": "tmpfs", "target": "/var/lib/postgresql/data"}], "no named volume"),
    ([{"type": "volume", "target": "/var/lib/postgresql/data"}], "no named volume"),  # anonymous
    ([{"type": "bind", "source": "/srv/pg", "target": "/var/lib/postgresql/data"}], "no named volume"),
])
def test_a_prod_data_service_without_a_named_volume_is_refused(mounts, words):
    props = with_spec(good_service("postgres"), mounts=mounts)
    [msg] = violations("prod-stateful-protected", props, name="postgres", stack="prod")
    assert msg.startswith("[prod-stateful-protected] data service 'postgres'") and words in msg


@pytest.mark.parametrize("placement", [
    None,
    {"constraints": []},
    {"constraints": ["node.role==manager"]},
    {"constraints": ["node.labels.ai-meeting.data!=false"]},
])
def test_a_prod_data_service_not_pinned_is_refused(placement):
    props = good_service("redis", placement=placement)
    [msg] = violations("prod-stateful-protected", props, name="redis", stack="prod")
    assert "not pinned" in msg and "node.labels.ai-meeting.data==true" in msg


@pytest.mark.parametrize("constraint", ["node.labels.ai-meeting.data==true", "node.hostname==db-1",
                                        "node.id==2ivku8v2gvtg4"])
def test_pinning_constraints(constraint):
    props = good_service("redis", placement={"constraints": ["node.role==worker", constraint]})
    assert violations("prod-stateful-protected", props, stack="prod") == []


def test_a_prod_data_service_runs_one_task():
    props = good_service("minio")
    props["mode"] = {"replicated": {"replicas": 2.0}}
    [msg] = violations("prod-stateful-protected", props, stack="prod")
    assert "runs 2 tasks" in msg
    props["mode"] = {"global": True}
    [msg] = violations("prod-stateful-protected", props, stack="prod")
    assert "global mode" in msg


def test_stateless_services_and_dev_stacks_need_no_pinning():
    assert violations("prod-stateful-protected", good_service("api", placement=None), stack="prod") == []
    bare = with_spec(good_service("postgres", placement=None), mounts=None)
    assert reasons("prod-stateful-protected", bare, stack="dev") == ["stack dev is dev, not prod"]


def test_a_data_service_with_unknown_mounts_or_label_is_said_in_prod():
    props = with_spec(good_service("postgres"), mounts=[{"type": "volume", "source": U, "target": "/data"}])
    [reason] = reasons("prod-stateful-protected", props, stack="prod")
    assert "task_spec.container_spec.mounts[0]" in reason
    # one named volume decides, whatever another mount is
    props = with_spec(good_service("postgres"), mounts=[{"type": U, "target": "/tmp"},
                                                        {"type": "volume", "source": "pg", "target": "/data"}])
    assert reasons("prod-stateful-protected", props, stack="prod") == []
    unlabelled = good_service("postgres")
    unlabelled["labels"] = U
    [reason] = reasons("prod-stateful-protected", unlabelled, stack="prod")
    assert "ai-meeting.service" in reason


# ---------------------------------------------------------------- prod TLS


def tls_violations(resources, **kwargs):
    return [m for m, _ in run_stack_policy(POLICIES["prod-tls-required"], resources, **kwargs)]


PROVIDED = {"ai-meeting:tls": '{"mode": "provided"}'}


def test_prod_nginx_service_publishing_443_passes():
    assert tls_violations([(S, "nginx", good_service("nginx"))], stack="prod", stack_config=PROVIDED) == []


def test_prod_nginx_service_without_443_is_refused():
    plain = good_service("nginx")
    plain["endpointSpec"]["ports"] = plain["endpointSpec"]["ports"][:1]
    [msg] = tls_violations([(S, "nginx", plain)], stack="prod", stack_config=PROVIDED)
    assert "nginx service 'nginx'" in msg and "does not publish 443" in msg


# ---------------------------------------------------------------- values not known during a preview


@pytest.mark.parametrize("policy,change,what", [
    ("container-healthcheck", lambda p: p["taskSpec"]["containerSpec"].update(healthcheck=U),
     "task_spec.container_spec.healthcheck"),
    ("container-healthcheck", lambda p: p["taskSpec"].update(containerSpec=U), "task_spec.container_spec.healthcheck"),
    ("container-restart-policy", lambda p: p["taskSpec"]["restartPolicy"].update(condition=U),
     "task_spec.restart_policy.condition"),
    ("container-resource-limits", lambda p: p["taskSpec"]["resources"]["limits"].update(memoryBytes=U),
     "task_spec.resources.limits.memory_bytes"),
    ("container-log-rotation", lambda p: p["taskSpec"].update(logDriver=U), "task_spec.log_driver.name"),
    ("container-log-rotation", lambda p: p["taskSpec"]["logDriver"].update(options=U), "task_spec.log_driver.options"),
    ("ports-loopback-only", lambda p: p["endpointSpec"].update(ports=U), "endpoint_spec.ports"),
    ("ports-loopback-only", lambda p: p["taskSpec"]["networksAdvanceds"][0].update(name=U),
     "task_spec.networks_advanceds[0].name"),
    ("image-pinned-tag", lambda p: p["taskSpec"]["containerSpec"].update(image=U), "task_spec.container_spec.image"),
])
def test_an_unknown_service_property_is_deferred_and_said(policy, change, what):
    props = good_service("api")
    change(props)
    assert reasons(policy, props, name="api") and what in reasons(policy, props, name="api")[0]
    notes = unknown_notes([(S, "api", props)])
    mine = [n for n in notes if n.startswith(f"[{policy}] 'api'")]
    assert len(mine) == 1 and what in mine[0] and "not known during preview" in mine[0], notes


# ---------------------------------------------------------------- passwords as docker.Secret files


@pytest.mark.parametrize("service,name", [("postgres", "POSTGRES_PASSWORD"), ("minio", "MINIO_ROOT_PASSWORD")])
def test_a_password_the_image_reads_from_a_file_is_not_plain_environment(service, name):
    env = {"TZ": "UTC", name: "s3cret"}
    [msg] = violations("service-secrets-as-files", with_spec(good_service(service), env=env), name=service)
    assert msg.startswith(f"[service-secrets-as-files] service '{service}'") and f"{name}_FILE" in msg
    assert "s3cret" not in msg
    env = {"TZ": "UTC", f"{name}_FILE": "/run/secrets/pw"}
    assert violations("service-secrets-as-files", with_spec(good_service(service), env=env)) == []


def test_the_image_decides_not_the_variable_name():
    # The API's image reads only environment: its MINIO_ROOT_PASSWORD stays there.
    api = with_spec(good_service("api"), env={"MINIO_ROOT_PASSWORD": "x", "DB_PASSWORD": "y"})
    assert violations("service-secrets-as-files", api) == []
    # A postgres image under another label (and a registry path, a digest) is still postgres.
    pg = with_spec(good_service("api"), image="registry:5000/lib/postgres:15@sha256:" + "a" * 64,
                   env={"POSTGRES_PASSWORD": "x"})
    assert violations("service-secrets-as-files", pg)
    grafana = with_spec(good_service("api"), image="grafana/grafana:10.4.2",
                        env={"GF_SECURITY_ADMIN_PASSWORD": "x"})
    [msg] = violations("service-secrets-as-files", grafana)
    assert "GF_SECURITY_ADMIN_PASSWORD__FILE" in msg


def test_unknown_environment_is_said_only_where_it_matters():
    pg = with_spec(good_service("postgres"), env=U)
    [reason] = reasons("service-secrets-as-files", pg)
    assert "task_spec.container_spec.env" in reason and "POSTGRES_PASSWORD" in reason
    assert reasons("service-secrets-as-files", with_spec(good_service("api"), env=U)) == []


# ---------------------------------------------------------------- captured from the engine

CAPTURED = json.loads((Path(__file__).parent / "fixtures" / "services-analyzed.json").read_text())
CAPTURED_EXPECTED = {  # tests/guardrails/programs/bad/__main__.py, previewed as prod-bad
    "svc-api": set(),
    "svc-nginx": set(),
    "svc-postgres": {"ports-loopback-only", "prod-stateful-protected", "service-secrets-as-files"},
    "svc-sloppy": {"image-pinned-tag", "container-healthcheck", "container-restart-policy",
                   "container-resource-limits", "container-log-rotation"},
}


@pytest.mark.parametrize("name", sorted(CAPTURED_EXPECTED))
def test_services_as_the_engine_sends_them(name):
    """What a real preview handed the pack (fixtures/capture_services.py): each captured service
    fails exactly the rules it should, the good ones are judged by every service rule."""
    props = CAPTURED[name]
    failed, deferred = set(), []
    for policy in rules.RESOURCE_RULES:
        out = violations(policy, props, name=name, stack="prod-bad", not_applicable=deferred)
        if out:
            failed.add(policy)
            assert all(f"'{name}'" in m and m.startswith(f"[{policy}]") for m in out), out
    assert failed == CAPTURED_EXPECTED[name]
    assert deferred == ["judges RandomPassword resources only"]


def test_the_captured_shapes_are_the_ones_these_tests_build():
    """good_service() is shaped as the engine's: the same nested camelCase keys."""
    def keys(value, path=""):
        if isinstance(value, dict):
            return {k for key, v in value.items() for k in {f"{path}.{key}"} | keys(v, f"{path}.{key}")
                    if "options." not in k and "env." not in k}
        if isinstance(value, list):
            return {k for v in value for k in keys(v, path + "[]")}
        return set()
    built, captured = keys(good_service("nginx")), keys(CAPTURED["svc-nginx"])
    engine_only = {".taskSpec.containerSpec.isolation", ".taskSpec.containerSpec.commands",
                   ".endpointSpec.ports[].protocol"}
    assert captured - built <= engine_only, captured - built
