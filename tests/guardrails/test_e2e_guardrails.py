"""Guardrails against the real engine and the local Docker engine (pytest -m e2e).

Uses the small programs in tests/guardrails/programs/ (same providers and conventions as the
real program) on a throw-away file:// backend, through the real scripts: plan / apply-plan,
preview with the policy pack, guard-stateful, drift, and the examples/consumer stack.
Under CI=true a missing pulumi or docker engine fails; elsewhere these tests are skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from guardrails_env import REPO, require_engine

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.toolchain]

PROGRAMS = Path(__file__).parent / "programs"
STACK = "e2e"
TIMEOUT = 600


class Engine:
    """Runs pulumi and the repo's scripts against an isolated backend."""

    def __init__(self, tmp: Path, prefix: str):
        self.tmp = tmp
        self.prefix = prefix
        state = tmp / "state"
        state.mkdir()
        self.env = {
            **os.environ,
            "PULUMI_BACKEND_URL": f"file://{state}",
            "PULUMI_CONFIG_PASSPHRASE": "guardrails-e2e-passphrase",
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PLAN_DIR": str(tmp / "plans"),
            "NO_COLOR": "1",
        }
        self.env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
        self.env.pop("AI_MEETING_ENVIRONMENT", None)

    def program(self, name: str, project_name: str | None = None, source: Path | None = None) -> Path:
        """Copy a program to the temp dir, pointing its virtualenv at the repo's."""
        dest = self.tmp / name
        shutil.copytree(source or PROGRAMS / name, dest,
                        ignore=shutil.ignore_patterns("Pulumi.*.yaml", "__pycache__"))
        text = (dest / "Pulumi.yaml").read_text()
        text = re.sub(r"virtualenv: .*", f"virtualenv: {REPO / '.venv'}", text)
        (dest / "Pulumi.yaml").write_text(text)
        return dest

    def run(self, args, cwd: Path, env: dict | None = None, check: bool = False, timeout=TIMEOUT):
        """A shell command with pulumi-env.sh sourced and our backend forced."""
        overrides = {k: self.env[k] for k in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE")}
        exports = " ".join(f"{k}='{v}'" for k, v in overrides.items())
        script = (f"source {REPO}/scripts/pulumi-env.sh >/dev/null; export {exports}; "
                  f"unset PULUMI_CONFIG_PASSPHRASE_FILE; {args}")
        proc = subprocess.run(["bash", "-c", script], cwd=cwd, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"`{args}` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def script(self, name: str, *args: str, cwd: Path, env: dict | None = None):
        """One of the repo's scripts, aimed at the program in `cwd`."""
        quoted = " ".join(f"'{a}'" for a in args)
        return self.run(f"{REPO}/scripts/{name} {quoted}", cwd=cwd,
                        env={"PULUMI_PROJECT_DIR": str(cwd), **(env or {})})


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def _build_test_images(tag_base: str) -> dict[str, str]:
    """A tiny image from the host's own /bin/sh, sleep and true (no registry needed), tagged
    base, app:1, app:2, app:3 with distinct image ids. Returns tag -> image id."""
    root = Path(f"/tmp/{tag_base.replace('/', '-')}-rootfs")
    shutil.rmtree(root, ignore_errors=True)
    files = {"/bin/sh", "/bin/sleep", "/bin/true"}
    for binary in list(files):
        ldd = subprocess.run(["ldd", os.path.realpath(binary)], capture_output=True, text=True).stdout
        files |= set(re.findall(r"(/\S+\.so[.\d]*)", ldd))
    for f in files:
        real = os.path.realpath(f)
        dest = root / f.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(real, dest)
    tar = root.with_suffix(".tar")
    subprocess.run(["tar", "-C", str(root), "-cf", str(tar), "."], check=True)
    ids = {}
    for tag in ("base", "app-1", "app-2", "app-3"):
        ref = f"{tag_base}:{tag}"
        _docker("import", "--change", f"LABEL guardrails-e2e-variant={tag}", str(tar), ref)
        ids[ref] = _docker("image", "inspect", "-f", "{{.Id}}", ref).stdout.strip()
    shutil.rmtree(root, ignore_errors=True)
    tar.unlink()
    return ids


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    require_engine()
    prefix = "gr" + uuid.uuid4().hex[:8]
    eng = Engine(tmp_path_factory.mktemp("guardrails"), prefix)
    eng.images = _build_test_images(f"guardrails-e2e/{prefix}")
    yield eng
    _docker("rm", "-f", *(_docker("ps", "-aq", "--filter", f"label=guardrails-e2e={prefix}").stdout.split()),
            check=False)
    _docker("volume", "rm", "-f", *(_docker("volume", "ls", "-q", "--filter",
                                            f"label=guardrails-e2e={prefix}").stdout.split()), check=False)
    _docker("rmi", "-f", *eng.images, check=False)


def _image(eng: Engine, variant: str) -> str:
    return f"guardrails-e2e/{eng.prefix}:{variant}"


@pytest.fixture(scope="module")
def app(engine):
    """The app program deployed once (api-1 on image app-1), destroyed at the end."""
    eng = engine
    cwd = eng.program("app")
    eng.run(f"pulumi stack init {STACK}", cwd=cwd, check=True)
    for key, value in (("prefix", eng.prefix), ("api_image", _image(eng, "app-1")),
                       ("base_image", _image(eng, "base"))):
        eng.run(f"pulumi config set --stack {STACK} {key} '{value}'", cwd=cwd, check=True)
    up = eng.run(f"pulumi up --stack {STACK} --yes --non-interactive --skip-preview "
                 f"--policy-pack {REPO}/policy", cwd=cwd)
    assert up.returncode == 0, up.stdout + up.stderr
    yield cwd
    eng.run(f"pulumi destroy --stack {STACK} --yes --non-interactive", cwd=cwd)


def _container_image_id(eng: Engine, name: str) -> str:
    return _docker("inspect", "-f", "{{.Image}}", f"{eng.prefix}-{name}").stdout.strip()


# ------------------------------------------------------------------ apply exactly the plan


def test_image_change_is_in_the_saved_plan_and_applied(engine, app):
    eng = engine
    eng.run(f"pulumi config set --stack {STACK} api_image {_image(eng, 'app-2')}", cwd=app, check=True)
    plan = eng.script("plan", STACK, cwd=app)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    plan_file = Path(eng.env["PLAN_DIR"]) / f"{STACK}.json"
    saved = plan_file.read_text()
    api_urn = next(urn for urn in json.loads(saved)["resourcePlans"] if urn.endswith("::api-1"))
    assert _image(eng, "app-2") in json.dumps(json.loads(saved)["resourcePlans"][api_urn])

    applied = eng.script("apply-plan", STACK, cwd=app)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert _container_image_id(eng, "api-1") == eng.images[_image(eng, "app-2")]
    assert not plan_file.exists(), "a plan is single-use"


def test_change_after_the_preview_makes_apply_plan_refuse(engine, app):
    eng = engine
    eng.run(f"pulumi config set --stack {STACK} api_image {_image(eng, 'app-3')}", cwd=app, check=True)
    assert eng.script("plan", STACK, cwd=app).returncode == 0
    # someone changes the program's input after the preview was reviewed
    eng.run(f"pulumi config set --stack {STACK} api_image {_image(eng, 'app-1')}", cwd=app, check=True)
    refused = eng.script("apply-plan", STACK, cwd=app)
    out = refused.stdout + refused.stderr
    assert refused.returncode != 0, out
    assert "REFUSED" in out and "no longer matches the saved plan" in out
    assert "api-1" in out  # the engine names the resource that left the plan
    assert _container_image_id(eng, "api-1") == eng.images[_image(eng, "app-2")], "nothing applied"
    # leave the stack's config matching what runs
    eng.run(f"pulumi config set --stack {STACK} api_image {_image(eng, 'app-2')}", cwd=app, check=True)


# ------------------------------------------------------------------ policy pack


def test_policy_pack_stops_bad_containers_naming_resource_and_rule(engine):
    eng = engine
    cwd = eng.program("bad")
    eng.run("pulumi stack init bad", cwd=cwd, check=True)
    eng.run(f"pulumi config set --stack bad base_image {_image(eng, 'base')}", cwd=cwd, check=True)
    preview = eng.script("preview", "bad", cwd=cwd)
    out = preview.stdout + preview.stderr
    assert preview.returncode != 0, out
    assert "mandatory" in out
    expected = {
        "ports-loopback-only": "'postgres'",
        "container-healthcheck": "'worker'",
        "image-pinned-tag": "'cache'",
    }
    for rule, resource in expected.items():
        lines = [line for line in out.splitlines() if f"[{rule}]" in line]
        assert any(resource in line for line in lines), f"{rule} for {resource} not in:\n{out}"
    violation_lines = [line for line in out.splitlines() if re.search(r"\[[a-z-]+\] ", line)]
    assert not any("'api-1'" in line for line in violation_lines), out
    # nothing was created
    assert _docker("ps", "-aq", "--filter", "name=guardrails-bad-").stdout.strip() == ""


# ------------------------------------------------------------------ stateful guard


def test_guard_blocks_postgres_volume_replace_unless_allowed(engine, app):
    eng = engine
    assert eng.script("guard-stateful", STACK, cwd=app).returncode == 0
    eng.run(f"pulumi config set --stack {STACK} pg_volume_name {eng.prefix}-postgres-data-v2",
            cwd=app, check=True)
    try:
        blocked = eng.script("guard-stateful", STACK, cwd=app)
        out = blocked.stdout + blocked.stderr
        assert blocked.returncode == 3, out
        urns = re.findall(r"\((urn:pulumi:[^)\s]+)\)", out)
        vol_urn = next(u for u in urns if u.endswith("docker:index/volume:Volume::postgres-data"))
        pg_urn = next(u for u in urns if u.endswith("docker:index/container:Container::postgres"))
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
    eng.run(f"pulumi config set --stack consumer infraStack organization/ai-meeting/{STACK}",
            cwd=cwd, check=True)
    up = eng.run("pulumi up --stack consumer --yes --non-interactive --skip-preview", cwd=cwd)
    assert up.returncode == 0, up.stdout + up.stderr

    outputs = json.loads(eng.run("pulumi stack output --stack consumer --json", cwd=cwd, check=True).stdout)
    assert outputs["uptime_check"]["url"] == f"https://{eng.prefix}.localhost:8443/api/health"
    assert outputs["reporting_database_url"] == "[secret]"

    shown = json.loads(eng.run("pulumi stack output --stack consumer --json --show-secrets",
                               cwd=cwd, check=True).stdout)
    dsn = shown["reporting_database_url"]
    assert dsn.startswith("postgresql://ai_meeting:") and "application_name=uptime-reporter" in dsn
    password = dsn.split("postgresql://ai_meeting:")[1].split("@")[0]
    assert len(password) == 32
    exported = eng.run("pulumi stack export --stack consumer", cwd=cwd, check=True).stdout
    assert password not in exported, "the derived secret is stored in plaintext"
    eng.run("pulumi destroy --stack consumer --yes --non-interactive", cwd=cwd)


# ------------------------------------------------------------------ drift


def test_container_changed_by_hand_is_reported_as_drift(engine, app):
    eng = engine
    clean = eng.script("drift", STACK, cwd=app)
    assert clean.returncode == 0, clean.stdout + clean.stderr

    _docker("update", "--memory", "256m", "--memory-swap", "512m", f"{eng.prefix}-api-1")
    drift = eng.script("drift", STACK, cwd=app)
    out = drift.stdout + drift.stderr
    assert drift.returncode == 2, out
    assert "DRIFT" in out and "api-1" in out and "memory" in out

    _docker("rm", "-f", f"{eng.prefix}-postgres")
    gone = eng.script("drift", STACK, cwd=app)
    out = gone.stdout + gone.stderr
    assert gone.returncode == 2, out
    assert re.search(r"postgres: gone", out), out


# ------------------------------------------------------------------ the real program


def test_real_program_dev_config_passes_guard_and_policy_pack(engine, tmp_path):
    """The real program (a copy, on the throw-away backend, dev config) previews with the policy
    pack without a violation, and a first preview has nothing stateful at risk."""
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
    eng.run("pulumi stack init guardrails-dev", cwd=prog, check=True)
    dev_config = (REPO / "Pulumi.dev.yaml").read_text()
    (prog / "Pulumi.guardrails-dev.yaml").write_text(
        (prog / "Pulumi.guardrails-dev.yaml").read_text() + "\n" + dev_config
        if (prog / "Pulumi.guardrails-dev.yaml").exists() else dev_config)
    guard = eng.script("guard-stateful", "guardrails-dev", cwd=prog)
    assert guard.returncode == 0, guard.stdout + guard.stderr
    preview = eng.script("preview", "guardrails-dev", cwd=prog)
    out = preview.stdout + preview.stderr
    assert preview.returncode == 0, out
    assert "mandatory" not in out.lower(), out
