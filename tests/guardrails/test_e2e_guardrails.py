"""Guardrails through the real engine and the local Docker engine (pytest -m e2e).

Uses the small programs in tests/guardrails/programs/ (built like the real program: components,
containers on RemoteImage ids, labels, data volumes, a generated password) on a throw-away
file:// backend, through the real scripts: plan / apply-plan, preview with the policy pack,
guard-stateful, drift, the examples/consumer stack; and the real program's dev config through
guard and pack. One `app` stack is deployed once and shared; tests that change it put it back.
Names: containers, volumes and images start with `aim-guard-<random>`; nothing publishes a port
beyond loopback except the never-created 28080 of the bad program.
Under CI=true a missing pulumi, plugin or Docker engine fails these tests; elsewhere they skip.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path

import pytest
import yaml

from guardrails_env import REPO, Engine, build_test_images, cleanup, docker, require_engine

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.toolchain]

STACK = "e2e"
PACK_VERSION = "0.1.0"
CONTAINER_RULES = {"ports-loopback-only", "container-healthcheck", "container-restart-policy",
                   "container-resource-limits", "container-log-rotation", "image-pinned-tag"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    require_engine()
    prefix = "aim-guard-" + uuid.uuid4().hex[:6]
    eng = Engine(tmp_path_factory.mktemp("guardrails"), prefix)
    try:
        eng.images = build_test_images(f"aim-guard/{prefix}")
        yield eng
    finally:
        cleanup(prefix, eng.images)


def _image(eng: Engine, variant: str) -> str:
    return f"aim-guard/{eng.prefix}:{variant}"


# `--event-log FILE`: the engine's own event stream (what a Pulumi Cloud backend would receive),
# incl. each resource's policy verdicts; the CLI offers the flag with PULUMI_DEBUG_COMMANDS.
EVENT_LOG = {"PULUMI_DEBUG_COMMANDS": "true"}


def _events(path: Path) -> list[dict]:
    """The engine's event log (`--event-log`): one JSON event per line."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _summaries(events: list[dict]) -> dict[str, dict]:
    """urn -> the pack's per-resource verdicts (policyAnalyzeSummaryEvent), "" -> stack verdicts."""
    out: dict[str, dict] = {}
    for e in events:
        if "policyAnalyzeSummaryEvent" in e:
            s = e["policyAnalyzeSummaryEvent"]
            out[s["resourceUrn"]] = s
        elif "policyAnalyzeStackSummaryEvent" in e:
            out[""] = e["policyAnalyzeStackSummaryEvent"]
    return out


def _violations(events: list[dict]) -> list[dict]:
    return [e["policyEvent"] for e in events if "policyEvent" in e]


@pytest.fixture(scope="module")
def app(engine):
    """The app program deployed once (api-1 on image app-1) with the policy pack; destroyed at the end."""
    eng = engine
    cwd = eng.program("app")
    eng.run(f"pulumi stack init {STACK}", cwd=cwd, check=True)
    eng.config(cwd, STACK, prefix=eng.prefix, api_image=_image(eng, "app-1"), base_image=_image(eng, "base"))
    up = eng.run(f"pulumi up --stack {STACK} --yes --non-interactive --skip-preview "
                 f"--policy-pack {REPO}/policy", cwd=cwd)
    assert up.returncode == 0, up.stdout + up.stderr
    yield cwd
    down = eng.run(f"pulumi destroy --stack {STACK} --yes --non-interactive", cwd=cwd)
    assert down.returncode == 0, down.stdout + down.stderr


def _container_image_id(name: str) -> str:
    return docker("inspect", "-f", "{{.Image}}", name).stdout.strip()


# ------------------------------------------------------------------ apply exactly the plan


def test_image_change_is_in_the_saved_plan_and_applied(engine, app):
    eng = engine
    eng.config(app, STACK, api_image=_image(eng, "app-2"))
    plan = eng.script("plan", STACK, cwd=app)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    plan_file = Path(eng.env["PLAN_DIR"]) / f"{STACK}.json"
    plans = json.loads(plan_file.read_text())["resourcePlans"]
    image_urn = next(urn for urn in plans if urn.endswith("RemoteImage::api-image"))
    assert _image(eng, "app-2") in json.dumps(plans[image_urn])
    assert any(urn.endswith("Container::api-1") for urn in plans)

    applied = eng.script("apply-plan", STACK, cwd=app)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert _container_image_id(f"{eng.prefix}-api-1") == eng.images[_image(eng, "app-2")]
    assert not plan_file.exists(), "a plan is single-use"


def test_change_after_the_preview_makes_apply_plan_refuse(engine, app):
    eng = engine
    eng.config(app, STACK, api_image=_image(eng, "app-3"))
    assert eng.script("plan", STACK, cwd=app).returncode == 0
    # someone changes the program's input after the preview was reviewed
    eng.config(app, STACK, api_image=_image(eng, "app-1"))
    try:
        refused = eng.script("apply-plan", STACK, cwd=app)
        out = refused.stdout + refused.stderr
        assert refused.returncode != 0, out
        assert "REFUSED" in out and "no longer matches the saved plan" in out
        assert "violates plan" in out and "api-image" in out  # the engine names the resource
        assert _container_image_id(f"{eng.prefix}-api-1") == eng.images[_image(eng, "app-2")], "nothing applied"
    finally:
        # leave the stack's config matching what runs
        eng.config(app, STACK, api_image=_image(eng, "app-2"))


# ------------------------------------------------------------------ policy pack


BAD_EXPECTED = {  # resource -> the rules it must fail (programs/bad/__main__.py)
    "postgres": {"ports-loopback-only"},
    "worker": {"container-healthcheck"},
    "sloppy": {"container-restart-policy", "container-resource-limits", "container-log-rotation"},
    "cache": {"image-pinned-tag"},
    "latest-image": {"image-pinned-tag"},
    "short-password": {"password-min-length", "prod-stateful-protected"},
    "data": {"prod-stateful-protected"},
    "svc-postgres": {"ports-loopback-only", "prod-stateful-protected", "service-secrets-as-files"},
    "svc-sloppy": {"image-pinned-tag", "container-healthcheck", "container-restart-policy",
                   "container-resource-limits", "container-log-rotation"},
}
SERVICE_RULES = CONTAINER_RULES | {"prod-stateful-protected", "service-secrets-as-files"}


def test_policy_pack_gives_every_rule_a_verdict_and_stops_bad_resources(engine):
    """Preview of the bad program as a prod stack: each mandatory rule fails on the resource it
    should, with the rule and resource named, the pack at its real version; the good container
    passes every rule; the one image that is neither literal nor a RemoteImage's id is said by
    preview-unknowns instead of passing silently; nothing is created."""
    eng = engine
    cwd = eng.program("bad")
    stack = "prod-bad"
    eng.run(f"pulumi stack init {stack}", cwd=cwd, check=True)
    eng.config(cwd, stack, base_image=_image(eng, "base"))
    eng.config(cwd, stack, **{"tls.mode": "self-signed"})
    log = eng.tmp / "bad-events.json"
    preview = eng.script("preview", stack, "--event-log", str(log), cwd=cwd, env=EVENT_LOG)
    out = preview.stdout + preview.stderr
    assert preview.returncode != 0, out
    assert "mandatory" in out
    assert f"ai-meeting-guardrails@v{PACK_VERSION}" in out
    assert "@v0.0.1" not in out and "can't run policy" not in out, out
    assert "5432->5432 on 0.0.0.0" in out and "has length 16;" in out, out
    assert "data service 'svc-postgres'" in out and "25432->5432 (host mode)" in out, out

    events = _events(log)
    summaries = _summaries(events)
    by_name = {urn.rsplit("::", 1)[-1]: s for urn, s in summaries.items() if urn}
    for resource, rules in BAD_EXPECTED.items():
        assert set(by_name[resource].get("failed") or []) == rules, (resource, by_name[resource])
    assert {s["policyPackVersion"] for s in summaries.values()} == {PACK_VERSION}

    # every rule gave a verdict: the good container passed the container rules; its image is a
    # RemoteImage's id (unknown now), judged on the pinned RemoteImage `base-image`
    assert set(by_name["api-1"].get("passed") or []) == CONTAINER_RULES - {"image-pinned-tag"}
    assert not by_name["api-1"].get("failed")
    assert by_name["base-image"].get("passed") == ["image-pinned-tag"]
    # the good swarm services are judged by every rule that judges a service, and pass
    for good in ("svc-api", "svc-nginx"):
        assert set(by_name[good].get("passed") or []) == SERVICE_RULES, (good, by_name[good])
        assert not by_name[good].get("failed"), by_name[good]
    # `web` takes the id of the :latest RemoteImage: judged through that RemoteImage
    assert not by_name["web"].get("failed")
    # nginx may publish 28080 on 0.0.0.0, but in prod it must serve 443 and not be self-signed
    assert set(summaries[""].get("failed") or []) == {"prod-tls-required", "preview-unknowns"}

    violations = _violations(events)
    for v in violations:  # the event's message is the policy's description, then ours
        assert v["policyPackVersion"] == PACK_VERSION
        named = "image-pinned-tag" if v["policyName"] == "preview-unknowns" else v["policyName"]
        assert f"[{named}] " in v["message"], v
    mandatory = {(v["resourceUrn"].rsplit("::", 1)[-1], v["policyName"]) for v in violations
                 if v["enforcementLevel"] == "mandatory" and v["policyName"] != "prod-tls-required"}
    assert mandatory == {(r, rule) for r, rules in BAD_EXPECTED.items() for rule in rules}
    tls = [v["message"] for v in violations if v["policyName"] == "prod-tls-required"]
    assert any("self-signed" in m for m in tls) and any("'nginx'" in m and "443" in m for m in tls), tls
    [unknown] = [v for v in violations if v["policyName"] == "preview-unknowns"]
    assert unknown["enforcementLevel"] == "advisory"
    assert "\n[image-pinned-tag] 'computed'" in unknown["message"], unknown
    assert unknown["resourceUrn"].endswith("::computed")
    for line in out.splitlines():
        if re.search(r"\[[a-z-]+\] '", line):  # a violation message names resource and rule
            assert "'api-1'" not in line and "'svc-api'" not in line and "'svc-nginx'" not in line, line
    # nothing was created
    assert docker("ps", "-aq", "--filter", "name=guardrails-bad-").stdout.strip() == ""


# ------------------------------------------------------------------ stateful guard


def test_guard_blocks_postgres_volume_replace_unless_allowed(engine, app):
    eng = engine
    safe = eng.script("guard-stateful", STACK, cwd=app)
    assert safe.returncode == 0, safe.stdout + safe.stderr
    eng.config(app, STACK, pg_volume_name=f"{eng.prefix}-postgres-data-v2")
    try:
        blocked = eng.script("guard-stateful", STACK, cwd=app)
        out = blocked.stdout + blocked.stderr
        assert blocked.returncode == 3, out
        urns = re.findall(r"\((urn:pulumi:[^)\s]+)\)", out)
        vol_urn = next(u for u in urns if u.endswith("docker:index/volume:Volume::postgres-data"))
        pg_urn = next(u for u in urns if u.endswith("docker:index/container:Container::postgres"))
        assert "$" in vol_urn, "component-parented URN"
        assert "data volume" in out and "postgres data mount" in out
        assert "api-1" not in out.split("ALLOW_STATEFUL_REPLACE=")[0]

        partial = eng.script("guard-stateful", STACK, cwd=app, env={"ALLOW_STATEFUL_REPLACE": vol_urn})
        assert partial.returncode == 3, partial.stdout + partial.stderr

        allowed = eng.script("guard-stateful", STACK, cwd=app,
                             env={"ALLOW_STATEFUL_REPLACE": f"{vol_urn},{pg_urn}"})
        assert allowed.returncode == 0, allowed.stdout + allowed.stderr
        assert "all explicitly allowed" in allowed.stdout

        flagged = eng.script("guard-stateful", STACK, "--allow-stateful", cwd=app)
        assert flagged.returncode == 0, flagged.stdout + flagged.stderr
    finally:
        eng.run(f"pulumi config rm --stack {STACK} pg_volume_name", cwd=app, check=True)


# ------------------------------------------------------------------ consumer stack


def test_consumer_reads_url_and_secret_and_keeps_it_secret(engine, app):
    eng = engine
    cwd = eng.program("consumer", source=REPO / "examples" / "consumer")
    eng.run("pulumi stack init consumer", cwd=cwd, check=True)
    eng.config(cwd, "consumer", infraStack=f"organization/ai-meeting/{STACK}")
    up = eng.run("pulumi up --stack consumer --yes --non-interactive --skip-preview", cwd=cwd)
    try:
        assert up.returncode == 0, up.stdout + up.stderr

        outputs = json.loads(eng.run("pulumi stack output --stack consumer --json", cwd=cwd, check=True).stdout)
        assert outputs["uptime_check"]["url"] == f"https://{eng.prefix}.localhost:28443/api/health"
        assert outputs["reporting_database_url"] == "[secret]"

        shown = json.loads(eng.run("pulumi stack output --stack consumer --json --show-secrets",
                                   cwd=cwd, check=True).stdout)
        dsn = shown["reporting_database_url"]
        assert dsn.startswith("postgresql://ai_meeting:") and "application_name=uptime-reporter" in dsn
        password = dsn.split("postgresql://ai_meeting:")[1].split("@")[0]
        assert len(password) == 32
        exported = eng.run("pulumi stack export --stack consumer", cwd=cwd, check=True).stdout
        assert password not in exported, "the derived secret is stored in plaintext"
    finally:
        eng.run("pulumi destroy --stack consumer --yes --non-interactive", cwd=cwd)


# ------------------------------------------------------------------ drift


def test_container_changed_by_hand_is_reported_as_drift_and_up_puts_it_back(engine, app):
    eng = engine
    clean = eng.script("drift", STACK, cwd=app)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "drift: none" in clean.stdout

    docker("update", "--memory", "256m", "--memory-swap", "256m", f"{eng.prefix}-api-1")
    drift = eng.script("drift", STACK, cwd=app)
    out = drift.stdout + drift.stderr
    assert drift.returncode == 2, out
    assert re.search(r"api-1: changed outside Pulumi: .*\bmemory\b", out), out

    docker("rm", "-f", f"{eng.prefix}-postgres")
    gone = eng.script("drift", STACK, cwd=app)
    out = gone.stdout + gone.stderr
    assert gone.returncode == 2, out
    assert re.search(r"postgres: gone", out), out

    # the documented remedy: refresh reads what runs, up puts back what the program declares
    fixed = eng.run(f"pulumi up --stack {STACK} --refresh --yes --non-interactive --skip-preview "
                    f"--policy-pack {REPO}/policy", cwd=app)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    again = eng.script("drift", STACK, cwd=app)
    assert again.returncode == 0, again.stdout + again.stderr


# ------------------------------------------------------------------ the real program


def test_real_program_dev_config_passes_guard_and_policy_pack(engine, tmp_path):
    """The real program (a copy, on the throw-away backend, dev config under our own names and
    ports) previews with the policy pack: every rule gives a verdict on every resource and none
    fails, nothing is deferred, and a first preview has nothing stateful at risk."""
    eng = engine
    prog = tmp_path / "program"
    prog.mkdir()
    for item in ("Pulumi.yaml", "__main__.py", "components", "config", "render", "images"):
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, prog / item, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, prog / item)
    text = (prog / "Pulumi.yaml").read_text()
    (prog / "Pulumi.yaml").write_text(re.sub(r"virtualenv: .*", f"virtualenv: {REPO / '.venv'}", text))
    stack = "guardrails-dev"
    eng.run(f"pulumi stack init {stack}", cwd=prog, check=True)
    stack_file = prog / f"Pulumi.{stack}.yaml"
    settings = yaml.safe_load(stack_file.read_text()) if stack_file.exists() else {}
    config = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())["config"]
    config["ai-meeting:name_prefix"] = eng.prefix
    config.setdefault("ai-meeting:nginx", {}).update(http_port=28080, https_port=28443)
    config["ai-meeting:loopback_ports"] = {k: None for k in ("postgres", "redis", "minio", "minio_console", "api")}
    stack_file.write_text(yaml.safe_dump({**(settings or {}), "config": config}))

    guard = eng.script("guard-stateful", stack, cwd=prog)
    assert guard.returncode == 0, guard.stdout + guard.stderr
    log = tmp_path / "events.json"
    preview = eng.script("preview", stack, "--event-log", str(log), cwd=prog, env=EVENT_LOG)
    out = preview.stdout + preview.stderr
    assert preview.returncode == 0, out
    assert "mandatory" not in out.lower() and "can't run policy" not in out, out

    events = _events(log)
    assert _violations(events) == []
    summaries = _summaries(events)
    assert {s["policyPackVersion"] for s in summaries.values()} == {PACK_VERSION}
    assert set(summaries[""].get("passed") or []) == {"prod-tls-required", "preview-unknowns"}
    steps = [e["resourcePreEvent"]["metadata"] for e in events if "resourcePreEvent" in e]
    containers = [s["urn"] for s in steps if s["type"] == "docker:index/container:Container"]
    images = [s["urn"] for s in steps if s["type"] == "docker:index/remoteImage:RemoteImage"]
    assert len(containers) >= 6 and len(images) >= 6, steps
    carriers = [urn for urn in containers if urn.endswith("-files")]
    assert carriers, "read-only containers' files come in never-started carriers (README: Hardening)"
    for urn in carriers:
        # Never started: judged on their ports, exempt from the long-running rules (like jobs).
        passed = set(summaries[urn].get("passed") or [])
        assert "ports-loopback-only" in passed and not passed & (CONTAINER_RULES - {"ports-loopback-only", "image-pinned-tag"}), \
            (urn, summaries[urn])
    for urn in [u for u in containers if u not in carriers]:
        passed = set(summaries[urn].get("passed") or [])
        # the image is the RemoteImage's id (unknown now): judged on the RemoteImage's name,
        # and preview-unknowns passed, so nothing was left undecided
        assert passed >= CONTAINER_RULES - {"image-pinned-tag"}, (urn, summaries[urn])
    for urn in images:
        assert "image-pinned-tag" in (summaries[urn].get("passed") or []), summaries[urn]
