"""CI's time is measured and its verdict kept: .ci/run prints setup, each tier and the total, and
exits non-zero whenever setup or pytest failed (run on a copy with stand-in scripts/setup and
scripts/test). The tier times themselves come from tests/tier_times.py."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support import REPO
from tests.tier_times import format_lines, summary, tier_of


TIMES = {"tiers": {"e2e": {"seconds": 600.4, "tests": 40, "failed": 1}, "unit": {"seconds": 12.0, "tests": 300, "failed": 0}},
         "tests_seconds": 612.4, "session_seconds": 630.0, "other_seconds": 17.6, "exitstatus": 1}


def ci_copy(tmp_path: Path, setup_rc: int, test_rc: int, write_times: bool) -> Path:
    (tmp_path / ".ci").mkdir()
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / "scripts" / "setup").write_text(f"#!/bin/sh\necho stub-setup\nexit {setup_rc}\n")
    write = f"printf '%s' '{json.dumps(TIMES)}' > \"$AI_MEETING_TIER_TIMES\"\n" if write_times else ""
    (tmp_path / "scripts" / "test").write_text(f"#!/bin/sh\necho \"stub-test CI=$CI $*\"\n{write}exit {test_rc}\n")
    for f in (tmp_path / "scripts" / "setup", tmp_path / "scripts" / "test", tmp_path / ".ci" / "run"):
        f.chmod(f.stat().st_mode | stat.S_IXUSR)
    return tmp_path / ".ci" / "run"


def run(script: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "AI_MEETING_RELIABILITY_FIGURES", "AI_MEETING_TIER_TIMES")}
    env["TMPDIR"] = str(script.parent.parent)
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("test_rc", [0, 1, 2])
def test_ci_run_keeps_pytests_exit_status_and_prints_the_times(tmp_path, test_rc):
    proc = run(ci_copy(tmp_path, 0, test_rc, write_times=True))
    out = proc.stdout
    assert proc.returncode == test_rc, out + proc.stderr
    assert "stub-test CI=true -v --durations=25" in out
    for label in ("setup", "e2e", "unit", "(other)", "tests", "total"):
        assert f"ci:   {label}" in out, out
    assert "(40 tests, 1 failed)" in out
    assert ("FAILED: pytest exit status" in proc.stderr) == (test_rc != 0)


def test_ci_run_fails_when_pytest_dies_before_its_summary(tmp_path):
    proc = run(ci_copy(tmp_path, 0, 3, write_times=False))
    assert proc.returncode == 3
    assert "no tier times" in proc.stdout and "ci:   total" in proc.stdout


def test_ci_run_stops_when_setup_fails(tmp_path):
    proc = run(ci_copy(tmp_path, 1, 0, write_times=True))
    assert proc.returncode == 1
    assert "stub-setup" in proc.stdout and "stub-test" not in proc.stdout


@pytest.mark.parametrize("nodeid, tier", [
    ("tests/e2e/test_dev_stack.py::test_up", "e2e"),
    ("tests/guardrails/test_workflows.py::test_x[drift.yml]", "guardrails"),
    ("tests/render/sub/test_a.py::test_b", "render"),
    ("policy/test_p.py::test_q", "policy"),
    ("examples/consumer/test_c.py::test_d", "examples"),
    ("tests/test_top.py::test_e", "tests"),
])
def test_tier_of(nodeid, tier):
    assert tier_of(nodeid) == tier


def test_summary_sums_by_tier_and_keeps_the_exit_status():
    data = summary({"unit": 1.04, "e2e": 100.0}, {"unit": 3, "e2e": 1}, {"e2e": 1}, 110.0, 1)
    assert list(data["tiers"]) == ["e2e", "unit"]  # longest first
    assert data["tiers"]["e2e"] == {"seconds": 100.0, "tests": 1, "failed": 1}
    assert data["tests_seconds"] == 101.0 and data["other_seconds"] == 9.0 and data["exitstatus"] == 1
    lines = format_lines(data)
    assert lines[0].startswith("e2e") and "1 failed" in lines[0] and lines[-1].startswith("total")


def test_ci_run_writes_its_figures_and_prints_their_summary(tmp_path):
    from tests import figures

    script = ci_copy(tmp_path, 0, 1, write_times=True)
    (tmp_path / "tests").mkdir()
    shutil.copy(REPO / "tests" / "figures.py", tmp_path / "tests" / "figures.py")
    (tmp_path / "tests" / "__init__.py").write_text("")
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    doc = figures.document([figures.Figure("a", "1 s", "<= 30 s", True, "t::a"), figures.Figure("b", "40 s", "<= 30 s", False, "t::b"),
                            figures.Figure("c", "12", figures.NO_TARGET, None, "t::c")], 1, {"passed": 1, "failed": 1, "with_figures": 3})
    stub = tmp_path / "scripts" / "test"
    (tmp_path / "figures-of-the-stub.json").write_text(json.dumps(doc))
    stub.write_text(stub.read_text().replace("exit 1", f"cp '{tmp_path / 'figures-of-the-stub.json'}' \"$AI_MEETING_RELIABILITY_FIGURES\"\nexit 1"))
    proc = run(script)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "ci: reliability figures: 1 met, 1 missed, 1 figures without a target" in proc.stdout, proc.stdout + proc.stderr
    assert (tmp_path / "ai-meeting-reliability-figures.json").exists()
