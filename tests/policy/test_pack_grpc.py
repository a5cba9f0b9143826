"""The policy pack as the engine sees it: start `policy/` the way an analyzer plugin starts
(it prints its gRPC port), then call it over gRPC with the engine's own protocol messages
(GetAnalyzerInfo, Analyze, AnalyzeStack). No Pulumi CLI needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from tests.support import REPO
MANDATORY = analyzer_pb2.MANDATORY
ADVISORY = analyzer_pb2.ADVISORY
C = "docker:index/container:Container"
RI = "docker:index/remoteImage:RemoteImage"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # the engine's unknown-string sentinel


def _yaml_version() -> str:
    for line in (REPO / "policy" / "PulumiPolicy.yaml").read_text().splitlines():
        if line.startswith("version:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("PulumiPolicy.yaml has no version")


def _start(stack: str, stack_config: dict | None = None):
    env = {**os.environ, "PULUMI_STACK": stack, "PULUMI_PROJECT": "ai-meeting",
           "PULUMI_CONFIG": json.dumps(stack_config or {})}
    env.pop("AI_MEETING_ENVIRONMENT", None)
    env.pop("AI_MEETING_POLICY_ENFORCEMENT", None)
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c",
         "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')", str(REPO / "policy")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    port = proc.stdout.readline().strip()
    if not port.isdigit():
        proc.kill()
        raise AssertionError(f"policy pack did not start: {port!r} {proc.stderr.read()}")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return proc, channel, analyzer_pb2_grpc.AnalyzerStub(channel)


@pytest.fixture
def pack():
    started = []

    def start(stack="dev", stack_config=None):
        proc, channel, stub = _start(stack, stack_config)
        started.append((proc, channel))
        return stub

    yield start
    for proc, channel in started:
        channel.close()
        proc.kill()
        proc.wait(timeout=10)


def _struct(props: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(props)
    return s


def _urn(stack, typ, name):
    return f"urn:pulumi:{stack}::ai-meeting::{typ}::{name}"


def _analyze(stub, stack, typ, name, props, protect=False):
    req = analyzer_pb2.AnalyzeRequest(type=typ, name=name, urn=_urn(stack, typ, name),
                                      properties=_struct(props),
                                      options=analyzer_pb2.AnalyzerResourceOptions(protect=protect))
    return list(stub.Analyze(req).diagnostics)


def test_pack_describes_every_policy_as_mandatory_and_names_its_real_version(pack):
    info = pack().GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "ai-meeting-guardrails"
    assert info.version == _yaml_version() == "0.1.0"  # pulumi-policy alone would say 0.0.1
    levels = {p.name: p.enforcementLevel for p in info.policies}
    assert set(levels) >= {"ports-loopback-only", "container-healthcheck", "image-pinned-tag",
                           "prod-stateful-protected", "prod-tls-required"}
    assert levels.pop("preview-unknowns") == ADVISORY
    assert set(levels.values()) == {MANDATORY}


def test_published_db_port_untagged_image_and_no_healthcheck_over_the_wire(pack):
    stub = pack("dev")
    props = {"image": "postgres", "restart": "unless-stopped", "cpus": "1", "memory": 512,
             "logDriver": "json-file", "logOpts": {"max-size": "10m", "max-file": "3"},
             "labels": [{"label": "ai-meeting.service", "value": "postgres"}],
             "ports": [{"internal": 5432, "external": 5432, "ip": "0.0.0.0"}]}
    diags = _analyze(stub, "dev", C, "postgres", props)
    by_policy = {d.policyName: d for d in diags}
    assert set(by_policy) == {"ports-loopback-only", "image-pinned-tag", "container-healthcheck"}
    for d in diags:
        assert d.enforcementLevel == MANDATORY
        assert d.policyPackVersion == _yaml_version()
        assert d.urn == _urn("dev", C, "postgres")
        assert f"[{d.policyName}]" in d.message and "'postgres'" in d.message


def test_prod_detected_from_the_stack_name_the_engine_passes(pack):
    vol = {"name": "x", "labels": [{"label": "ai-meeting.data", "value": "true"}]}
    typ = "docker:index/volume:Volume"
    assert [d.policyName for d in _analyze(pack("prod"), "prod", typ, "postgres-data", vol)] == \
        ["prod-stateful-protected"]
    assert _analyze(pack("prod"), "prod", typ, "postgres-data", vol, protect=True) == []
    assert _analyze(pack("dev"), "dev", typ, "postgres-data", vol) == []


def test_prod_tls_stack_policy_reads_the_stack_config(pack):
    stub = pack("prod", {"ai-meeting:tls": json.dumps({"mode": "self-signed"})})
    nginx = {"labels": [{"label": "ai-meeting.service", "value": "nginx"}],
             "ports": [{"internal": 80, "external": 80, "ip": "0.0.0.0"}]}
    req = analyzer_pb2.AnalyzeStackRequest(resources=[analyzer_pb2.AnalyzerResource(
        type=C, name="nginx", urn=_urn("prod", C, "nginx"), properties=_struct(nginx),
        options=analyzer_pb2.AnalyzerResourceOptions())])
    diags = list(stub.AnalyzeStack(req).diagnostics)
    messages = [d.message for d in diags if d.policyName == "prod-tls-required"]
    assert any("self-signed" in m for m in messages), messages
    assert any("does not publish 443" in m for m in messages), messages
    assert all(d.enforcementLevel == MANDATORY for d in diags)


GOOD = {"restart": "unless-stopped", "cpus": "1.0", "memory": 512, "logDriver": "json-file",
        "logOpts": {"max-size": "10m", "max-file": "3"},
        "healthcheck": {"tests": ["CMD", "true"]},
        "labels": [{"label": "ai-meeting.service", "value": "api"},
                   {"label": "ai-meeting.kind", "value": "service"}],
        "ports": [{"internal": 3000, "external": 3000, "ip": "127.0.0.1"}]}


def _resource(stack, typ, name, props, deps=None):
    return analyzer_pb2.AnalyzerResource(
        type=typ, name=name, urn=_urn(stack, typ, name), properties=_struct(props),
        options=analyzer_pb2.AnalyzerResourceOptions(),
        propertyDependencies={k: analyzer_pb2.AnalyzerPropertyDependencies(urns=v)
                              for k, v in (deps or {}).items()})


def test_preview_with_an_image_id_not_known_yet_gets_a_verdict_from_every_rule(pack):
    """As in a first preview of the real program: the container's image is the RemoteImage's
    id (unknown), the RemoteImage's name is known. No rule gives up ("can't run policy"): the
    RemoteImage is judged, the container passes, and nothing is deferred."""
    stub = pack("dev")
    container = {**GOOD, "image": UNKNOWN}
    assert _analyze(stub, "dev", C, "api-1", container) == []
    [bad] = _analyze(stub, "dev", RI, "api-image", {"name": "ai-meeting/api:latest", "keepLocally": True})
    assert bad.policyName == "image-pinned-tag" and bad.enforcementLevel == MANDATORY
    assert "'api-image'" in bad.message and "latest" in bad.message
    assert bad.policyPackVersion == _yaml_version()
    assert _analyze(stub, "dev", RI, "web-image", {"name": "ai-meeting/web:0.1.0"}) == []

    stack = analyzer_pb2.AnalyzeStackRequest(resources=[
        _resource("dev", RI, "web-image", {"name": "ai-meeting/web:0.1.0", "imageId": UNKNOWN}),
        _resource("dev", C, "api-1", container, {"image": [_urn("dev", RI, "web-image")]}),
    ])
    assert list(stub.AnalyzeStack(stack).diagnostics) == []


def test_unknown_values_are_reported_never_passed_silently(pack):
    """A container whose image is computed from something that is not a RemoteImage, and whose
    restart policy is unknown: the mandatory rules cannot decide, preview-unknowns says so."""
    stub = pack("dev")
    container = {**GOOD, "image": UNKNOWN, "restart": UNKNOWN}
    req = analyzer_pb2.AnalyzeRequest(type=C, name="worker", urn=_urn("dev", C, "worker"),
                                      properties=_struct(container),
                                      options=analyzer_pb2.AnalyzerResourceOptions())
    resp = stub.Analyze(req)
    assert list(resp.diagnostics) == [], [d.message for d in resp.diagnostics]
    # neither passed nor failed: the engine's summary leaves them out of "passed"
    deferred = {n.policy_name for n in resp.not_applicable if "not known during preview" in n.reason}
    assert deferred == {"image-pinned-tag", "container-restart-policy"}
    # the rules that do not judge containers at all say so too (not counted as passed)
    assert {n.policy_name for n in resp.not_applicable} - deferred == {"password-min-length",
                                                                        "prod-stateful-protected",
                                                                        "service-secrets-as-files"}
    stack = analyzer_pb2.AnalyzeStackRequest(resources=[
        _resource("dev", "random:index/randomString:RandomString", "tag", {"result": UNKNOWN}),
        _resource("dev", C, "worker", container, {"image": [_urn("dev", "random:index/randomString:RandomString", "tag")]}),
    ])
    notes = list(stub.AnalyzeStack(stack).diagnostics)
    assert {d.policyName for d in notes} == {"preview-unknowns"}
    assert all(d.enforcementLevel == ADVISORY for d in notes)
    text = "\n".join(d.message for d in notes)
    assert "[image-pinned-tag] 'worker'" in text and "[container-restart-policy] 'worker'" in text
    assert all(d.urn == _urn("dev", C, "worker") for d in notes)
    assert "0.0.1" not in text


S = "docker:index/service:Service"


def _service(service, image, ports=None, healthcheck=True):
    """A docker.Service's inputs as the engine sends them (camelCase, numbers as floats)."""
    spec = {"image": image}
    if healthcheck:
        spec["healthcheck"] = {"tests": ["CMD-SHELL", "true"], "interval": "2s", "retries": 15.0}
    task = {"containerSpec": spec,
            "resources": {"limits": {"nanoCpus": 1e9, "memoryBytes": 536870912.0}},
            "restartPolicy": {"condition": "any"},
            "logDriver": {"name": "json-file", "options": {"max-size": "20m", "max-file": "5"}},
            "networksAdvanceds": [{"name": "ai-meeting-network", "aliases": [service]}]}
    if service == "postgres":
        spec["mounts"] = [{"type": "volume", "source": "ai-meeting-postgres-data", "target": "/var/lib/postgresql/data"}]
        task["placement"] = {"constraints": ["node.labels.ai-meeting.data==true"]}
    return {"name": f"ai-meeting-{service}", "labels": [{"label": "ai-meeting.service", "value": service}],
            "taskSpec": task, "mode": {"replicated": {"replicas": 1.0}},
            "endpointSpec": {"mode": "dnsrr", **({"ports": ports} if ports else {})}}


def test_a_swarm_service_is_judged_over_the_wire(pack):
    stub = pack("prod", {"ai-meeting:tls": json.dumps({"mode": "provided"})})
    good = _service("postgres", "postgres:15.6-alpine")
    assert _analyze(stub, "prod", S, "postgres", good) == []
    bad = _service("postgres", "postgres", healthcheck=False,
                   ports=[{"targetPort": 5432.0, "publishedPort": 5432.0, "publishMode": "host"}])
    bad["taskSpec"].pop("placement")
    diags = _analyze(stub, "prod", S, "postgres", bad)
    assert {d.policyName for d in diags} == {"ports-loopback-only", "image-pinned-tag",
                                             "container-healthcheck", "prod-stateful-protected"}
    for d in diags:
        assert d.enforcementLevel == MANDATORY and d.urn == _urn("prod", S, "postgres")
        assert f"[{d.policyName}]" in d.message and "service 'postgres'" in d.message
    nginx = _service("nginx", "nginx:1.25.4-alpine",
                     ports=[{"targetPort": 80.0, "publishedPort": 80.0, "publishMode": "host"}])
    assert _analyze(stub, "prod", S, "nginx", nginx) == []
    req = analyzer_pb2.AnalyzeStackRequest(resources=[_resource("prod", S, "nginx", nginx)])
    [tls] = list(stub.AnalyzeStack(req).diagnostics)
    assert tls.policyName == "prod-tls-required" and "nginx service 'nginx'" in tls.message
