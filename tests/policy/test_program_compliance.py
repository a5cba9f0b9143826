"""The real program (under the unit tests' Pulumi mocks) passes the policy pack's rules.

Catches a component that drifts from the conventions before any engine runs: the one-server
program (`docker.Container`s) in dev and prod, and the swarm program (`docker.Service`s,
target.kind swarm) in staging and prod. `protect` is not visible to mocks, so
prod-stateful-protected on volumes and passwords is covered by the e2e tests and the program's
own protection tests instead; on a swarm's services it judges placement and mounts, which the
mocks do show, so it runs here.
"""

from __future__ import annotations

import json

import pytest
from ai_meeting_policy import rules
from ai_meeting_policy.rules import Ctx, Res

from tests.unit import harness  # in-repo (pytest.ini puts the repo on sys.path): an import error fails, never skips

CHECKED = [name for name in rules.RESOURCE_RULES if name != "prod-stateful-protected"]

DATA = {"ai-meeting.data": "true"}
EDGE = {"ai-meeting.edge": "true"}
PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


def swarm_config(environment: str):
    """Three nodes (one data+edge manager, two workers) as tests/unit/test_swarm.py builds them;
    prod with a provided certificate (Let's Encrypt is refused on a swarm)."""
    from config import validate_config

    raw = {
        "environment": environment,
        "target": {"kind": "swarm", "private_key": harness.FAKE_PEM, "nodes": [
            {"host": "10.0.0.1", "role": "manager", "labels": {**DATA, **EDGE}},
            {"host": "10.0.0.2", "role": "worker", "labels": {}},
            {"host": "10.0.0.3", "role": "worker", "labels": {}}]},
        "api": {"replicas": 3},
    }
    if environment == "prod":
        raw.update(domains=["ai-meeting.com", "www.ai-meeting.com"],
                   tls={"mode": "provided", "certificate": PEM_CERT, "private_key": PEM_KEY})
    return validate_config(raw, environment)


@pytest.fixture(scope="module", params=["dev", "prod", "swarm-staging", "swarm-prod"])
def declared(request, tmp_path_factory):
    target, _, env = request.param.rpartition("-")
    mp = pytest.MonkeyPatch()
    mp.setenv("AI_MEETING_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        cfg = swarm_config(env) if target == "swarm" else harness.config(env)
        deployed = harness.deploy(cfg, stack=env)
    finally:
        mp.undo()
    resources = [Res(type=r.typ, name=r.name, props=r.inputs) for r in deployed.recorder.resources]
    tls = {"mode": cfg.tls.mode} if hasattr(cfg, "tls") else {}
    return env, resources, tls, target or "server"


def test_program_declares_what_the_pack_judges(declared):
    _, resources, _, target = declared
    if target == "swarm":
        services = {rules.service_of(r) for r in resources if r.type == rules.SERVICE}
        assert services == {"postgres", "redis", "minio", "api", "web", "nginx"}
    else:
        assert any(r.type == rules.CONTAINER for r in resources)


def test_every_resource_passes_the_resource_rules(declared):
    env, resources, _, _ = declared
    ctx = Ctx(stack=env, environment=env)
    problems = [str(m) for r in resources for name in CHECKED for m in rules.resource_outcomes(name, r, ctx)]
    assert problems == [], "\n".join(problems)


def test_every_data_service_keeps_its_data_on_a_named_volume(declared):
    env, resources, _, target = declared
    if target != "swarm":
        # One server: `protect` is not visible to mocks; each data container mounts its volume.
        for r in resources:
            if r.type == rules.CONTAINER and rules.service_of(r) in ("postgres", "redis", "minio"):
                assert any(v.get("volumeName") for v in r.props.get("volumes") or []), r.name
        return
    services = [r for r in resources if r.type == rules.SERVICE]
    for ctx in (Ctx(stack=env, environment=env), Ctx(stack="prod", environment="prod")):
        problems = [str(m) for r in services for m in rules.resource_outcomes("prod-stateful-protected", r, ctx)]
        assert problems == [], "\n".join(problems)


def test_prod_tls_rule_passes(declared):
    env, resources, tls, _ = declared
    ctx = Ctx(stack=env, environment=env, stack_config={"ai-meeting:tls": json.dumps(tls)})
    assert list(rules.check_prod_tls(resources, ctx)) == []
