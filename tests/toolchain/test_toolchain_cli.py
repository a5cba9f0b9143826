"""Fast checks of the toolchain scripts and the locally built CLI (no providers needed).

- scripts/pulumi-env.sh: PATH, flags, default file:// backend, a generated passphrase file that is
  private and never printed, and respect for what the caller already set (also under `set -u`).
- scripts/install-pulumi: the fast path (everything present -> nothing to do, in seconds), with
  stand-in plugins installed into a temporary PULUMI_HOME.
- the CLI itself: pinned version, local backend, passphrase secrets.

The CLI tests need `pulumi` (scripts/install-pulumi): under CI=true its absence fails them.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support import CACHE, REPO, unavailable

ENV_SH = REPO / "scripts" / "pulumi-env.sh"
INSTALL = REPO / "scripts" / "install-pulumi"


def versions() -> dict[str, str]:
    out = {}
    for line in (REPO / "toolchain" / "versions.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


PULUMI_VERSION = versions()["PULUMI_VERSION"]


def bash(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, cwd=REPO, timeout=60
    )


@pytest.fixture
def clean_env(tmp_path):
    return {"HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}


def test_env_sh_defaults(clean_env, tmp_path):
    script = f"""set -euo pipefail
. {ENV_SH}
printf 'PATH=%s\\n' "$PATH"
printf 'BACKEND=%s\\n' "$PULUMI_BACKEND_URL"
printf 'FILE=%s\\n' "$PULUMI_CONFIG_PASSPHRASE_FILE"
printf 'SKIP=%s\\n' "$PULUMI_SKIP_UPDATE_CHECK"
printf 'NOACQ=%s\\n' "$PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"
. {ENV_SH}
printf 'PATH2=%s\\n' "$PATH"
"""
    proc = bash(script, clean_env)
    assert proc.returncode == 0, proc.stderr
    got = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    home = Path(clean_env["HOME"])
    bin_dir = home / ".cache" / "ai-meeting" / "toolchain" / "bin"
    assert got["PATH"].split(":")[0] == str(bin_dir)
    assert got["PATH2"] == got["PATH"], "sourcing twice must not grow PATH"
    assert got["SKIP"] == "true" and got["NOACQ"] == "true"
    assert got["BACKEND"] == f"file://{REPO}/.pulumi-state"
    assert stat.S_IMODE((REPO / ".pulumi-state").stat().st_mode) == 0o700

    pass_file = Path(got["FILE"])
    assert pass_file == home / ".config" / "ai-meeting" / "passphrase"
    assert stat.S_IMODE(pass_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(pass_file.parent.stat().st_mode) == 0o700
    secret = pass_file.read_text()
    assert len(secret) >= 32
    assert secret not in proc.stdout and secret not in proc.stderr

    again = bash(script, clean_env)
    assert again.returncode == 0, again.stderr
    assert pass_file.read_text() == secret, "the passphrase is generated once"


def test_env_sh_respects_caller(clean_env, tmp_path):
    env = dict(
        clean_env,
        PULUMI_BACKEND_URL=f"file://{tmp_path}/elsewhere",
        PULUMI_CONFIG_PASSPHRASE="given",
        XDG_CONFIG_HOME=str(tmp_path / "xdg"),
    )
    proc = bash(
        f'set -u; . {ENV_SH}; echo "$PULUMI_BACKEND_URL ${{PULUMI_CONFIG_PASSPHRASE_FILE:-unset}}"',
        env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [f"file://{tmp_path}/elsewhere", "unset"]
    assert not (tmp_path / "xdg" / "ai-meeting" / "passphrase").exists()

    env = dict(clean_env, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    proc = bash(f'set -u; . {ENV_SH}; echo "$PULUMI_CONFIG_PASSPHRASE_FILE"', env)
    assert proc.stdout.strip() == str(tmp_path / "xdg" / "ai-meeting" / "passphrase")


def test_scripts_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        unavailable("shellcheck not installed (scripts/setup installs it)")
    proc = subprocess.run(
        ["shellcheck", str(INSTALL), str(ENV_SH)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout


# --------------------------------------------------------------------------------------------
# Needs the built CLI
# --------------------------------------------------------------------------------------------


@pytest.fixture
def pulumi_bin():
    path = f"{CACHE / 'toolchain' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    found = shutil.which("pulumi", path=path)
    if not found:
        unavailable("no pulumi CLI (run scripts/install-pulumi)")
    return found


@pytest.mark.toolchain
def test_cli_version_and_local_backend(pulumi_bin, tmp_path):
    env = dict(
        os.environ,
        PULUMI_SKIP_UPDATE_CHECK="true",
        PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
        PULUMI_BACKEND_URL=f"file://{tmp_path / 'state'}",
        PULUMI_CONFIG_PASSPHRASE="cli-test-passphrase",
        PULUMI_HOME=str(tmp_path / "pulumi-home"),
    )
    env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
    (tmp_path / "state").mkdir()
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: cli-test\nruntime: python\n")

    def pl(*args):
        proc = subprocess.run(
            [pulumi_bin, "--non-interactive", *args],
            env=env, cwd=project, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, f"pulumi {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    assert pl("version").strip().lstrip("v").startswith(PULUMI_VERSION)
    pl("stack", "init", "dev")
    pl("config", "set", "--secret", "token", "s3cr3t-value")
    assert pl("config", "get", "token").strip() == "s3cr3t-value"
    assert "s3cr3t-value" not in (project / "Pulumi.dev.yaml").read_text()
    assert "s3cr3t-value" not in pl("stack", "export")
    pl("stack", "rm", "--yes", "--force")


@pytest.mark.toolchain
def test_install_fast_path_with_everything_present(pulumi_bin, tmp_path):
    """With the CLI, a language host and the four plugins present, the script does nothing."""
    cache = tmp_path / "cache"
    bin_dir = cache / "toolchain" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "pulumi").symlink_to(pulumi_bin)
    fake = tmp_path / "fake"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    for name in ("pulumi-language-python", "pulumi-language-python-exec"):
        shutil.copy(fake, bin_dir / name)
    env = dict(
        os.environ,
        AI_MEETING_CACHE=str(cache),
        PULUMI_HOME=str(tmp_path / "pulumi-home"),
        PULUMI_SKIP_UPDATE_CHECK="true",
    )
    v = versions()
    for name in ("command", "random", "tls", "docker"):
        subprocess.run(
            [pulumi_bin, "plugin", "install", "resource", name, v[f"{name.upper()}_VERSION"],
             "--file", str(fake)],
            env=env, check=True, capture_output=True, timeout=60,
        )
    proc = subprocess.run([str(INSTALL)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nothing to do" in proc.stdout

    # One plugin at another version: --check reports it missing by name and version.
    subprocess.run(
        [pulumi_bin, "plugin", "rm", "resource", "tls", "--yes"], env=env, capture_output=True
    )
    proc = subprocess.run(
        [str(INSTALL), "--check"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert f"missing: plugin resource tls v{v['TLS_VERSION']}" in proc.stdout


@pytest.mark.toolchain
def test_install_refuses_an_archive_whose_sha256_differs(tmp_path):
    """A source archive that is not the one SOURCES.md lists is never built."""
    src = tmp_path / "src"
    src.mkdir()
    archive = versions()["RANDOM_ARCHIVE"]
    (src / archive).write_bytes(b"not the release source")
    env = dict(os.environ, AI_MEETING_CACHE=str(tmp_path / "cache"), PULUMI_HOME=str(tmp_path / "pulumi-home"))
    proc = subprocess.run([str(INSTALL), "--only", "random", "--source-dir", str(src)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"expected {versions()['RANDOM_SHA256']}" in proc.stderr and "not building" in proc.stderr
    assert not (tmp_path / "cache" / "toolchain" / "build" / "random").exists() or not any(
        (tmp_path / "cache" / "toolchain" / "build" / "random").rglob("pulumi-resource-random"))

    proc = subprocess.run([str(INSTALL), "--only", "tls", "--source-dir", str(src)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and f"{versions()['TLS_ARCHIVE']} not found" in proc.stderr


@pytest.mark.toolchain
def test_versions_match_the_source_archives_and_the_sdk_pins():
    """versions.env names what is really built: the archives' sha256 as SOURCES.md lists them,
    and provider versions equal to the Python SDK pins (the SDK asks for exactly those)."""
    v = versions()
    # Where scripts/install-pulumi reads the archives from (same default, same override).
    sources = Path(os.environ.get("AI_MEETING_TOOLCHAIN_SRC", REPO.parent / "shared" / "toolchain-src")) / "SOURCES.md"
    if not sources.exists():
        unavailable(f"{sources} is not there (the shared folder beside the repository, or AI_MEETING_TOOLCHAIN_SRC)")
    listed = sources.read_text()
    pins = dict(line.split("==") for line in (REPO / "requirements.txt").read_text().splitlines() if "==" in line)
    for name in ("LANGUAGE_PYTHON", "COMMAND", "RANDOM", "TLS", "DOCKER"):
        assert f"| {v[name + '_ARCHIVE']} |" in listed and v[name + "_SHA256"] in listed, name
        if name != "LANGUAGE_PYTHON":
            assert pins[f"pulumi-{name.lower()}"] == v[name + "_VERSION"], name
