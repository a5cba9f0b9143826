"""The benchmark works (docs/benchmarks.md): `scripts/bench --quick` brings the stack up with
docker compose and with `pulumi up`, one run each, and produces its figures, table and plot.
Values are not asserted (the machine is shared and noisy), only that each figure exists.

The compose file check is cheap and runs with the unit tier: bench/compose.py must be able to
translate what the program declares today into a compose file docker-compose accepts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support import REPO, require_engine, require_local_images, unavailable


def test_compose_file_renders_from_the_current_program(tmp_path):
    # A subprocess: the render declares the stack under Pulumi mocks, which are process-global.
    res = subprocess.run([sys.executable, "-m", "bench.compose", "--out", str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"bench/compose.py cannot translate the program any more:\n{res.stdout}{res.stderr}"
    text = (tmp_path / "docker-compose.yml").read_text()
    for service in ("postgres", "redis", "minio", "api", "web", "nginx"):
        assert f"\n  {service}:\n" in text, f"no {service} service"
    assert (tmp_path / "files" / "nginx" / "nginx.conf").exists()
    compose = shutil.which("docker-compose")
    if compose is None:
        unavailable("no docker-compose to validate the compose file (scripts/setup installs Debian's docker-compose)")
    env_file = tmp_path / "compose.env"
    env_file.write_text("DB_PASSWORD=x\nREDIS_PASSWORD=x\nMINIO_ROOT_PASSWORD=x\nTURN_PASSWORD=x\nJWT_SECRET=x\n"
                        f"AIM_BENCH_TLS_DIR={tmp_path}\n")
    check = subprocess.run([compose, "-f", str(tmp_path / "docker-compose.yml"), "--env-file", str(env_file), "config", "-q"],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr


def _require_tools() -> None:
    for tool in ("docker", "wrk", "nsenter", "openssl"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed (scripts/setup installs it)")
    if shutil.which("docker-compose") is None and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        unavailable("no docker compose (scripts/setup installs Debian's docker-compose)")
    require_engine()
    require_local_images()


def _figure(d: dict, path: str):
    for part in path.split("."):
        assert isinstance(d, dict) and part in d, f"missing {path} (at {part})"
        d = d[part]
    return d


@pytest.mark.bench
@pytest.mark.timeout(2100)  # waits for a benchmark already running here (scripts/bench takes a lock)
def test_quick_benchmark_produces_its_figures(tmp_path):
    _require_tools()
    out = tmp_path / "bench"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run([str(REPO / "scripts" / "bench"), "--quick", "--no-docs", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=2040)
    log = f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, log
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["compose"] and results["meta"]["pulumi"], log
    (run,) = results["runs"]
    for side in ("compose", "pulumi"):
        s = run[side]
        assert "error" not in s, f"{side}: {s.get('error')}"
        for path in ("cold.seconds", "cold.command_seconds", "noop.up_seconds", "scale.seconds",
                     "overhead.direct.rps", "overhead.nginx.rps", "overhead.ratio", "teardown.seconds"):
            value = _figure(s, path)
            assert isinstance(value, (int, float)) and value > 0, f"{side}.{path} = {value!r}\n{log}"
        for path in ("noop.up_changes", "rollout.served", "rollout.failed", "rollout.p99_ms", "rollout.command_seconds"):
            assert isinstance(_figure(s, path), (int, float)), f"{side}.{path}\n{log}"
        assert _figure(s, "rollout.served") > 0, f"{side}: no request was served during the rollout\n{log}"
        assert _figure(s, "cold.floor.by_service"), f"{side}: no start->healthy times from docker events"
    assert isinstance(_figure(run["pulumi"], "noop.preview_seconds"), float)
    assert any(step["type"].endswith("container:Container") for step in run["pulumi"]["cold"]["steps"]), "no engine step timings"
    table = (out / "benchmarks.md").read_text()
    assert "| 1. cold deploy" in table and "pulumi ÷ compose" in table and "Where the time goes" in table
    png = (out / "rollout.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    # Nothing of the benchmark is left on the engine.
    for network in ("aim-bench-network", "aim-bench-compose-network"):
        left = subprocess.run(["docker", "ps", "-aq", "--filter", f"network={network}"], capture_output=True, text=True).stdout
        assert not left.strip(), f"containers left on {network}"
