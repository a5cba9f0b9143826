"""The real program (under the unit tests' Pulumi mocks) passes the policy pack's rules.

Catches a component that drifts from the conventions before any engine runs. `protect` is not
visible to mocks, so prod-stateful-protected is covered by the e2e tests and the program's own
protection tests instead.
"""

from __future__ import annotations

import json

import pytest
from ai_meeting_policy import rules
from ai_meeting_policy.rules import Ctx, Res

from tests.unit import harness  # in-repo (pytest.ini puts the repo on sys.path): an import error fails, never skips

CHECKED = [name for name in rules.RESOURCE_RULES if name != "prod-stateful-protected"]


@pytest.fixture(scope="module", params=["dev", "prod"])
def declared(request, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("AI_MEETING_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        cfg = harness.config(request.param)
        deployed = harness.deploy(cfg)
    finally:
        mp.undo()
    resources = [Res(type=r.typ, name=r.name, props=r.inputs) for r in deployed.recorder.resources]
    tls = {"mode": cfg.tls.mode} if hasattr(cfg, "tls") else {}
    return request.param, resources, tls


def test_program_declares_containers(declared):
    _, resources, _ = declared
    assert any(r.type == rules.CONTAINER for r in resources)


def test_every_resource_passes_the_resource_rules(declared):
    env, resources, _ = declared
    ctx = Ctx(stack=env, environment=env)
    problems = [m for r in resources for name in CHECKED for m in rules.RESOURCE_RULES[name][0](r, ctx)]
    assert problems == [], "\n".join(problems)


def test_prod_tls_rule_passes(declared):
    env, resources, tls = declared
    ctx = Ctx(stack=env, environment=env, stack_config={"ai-meeting:tls": json.dumps(tls)})
    assert list(rules.check_prod_tls(resources, ctx)) == []
