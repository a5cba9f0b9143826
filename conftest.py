"""Shared test settings. Each tier's own conftest decides how to find its tools; under
CI=true a missing tool is a failure, never a silent skip.

Any test can record a measured figure with the `record` fixture (scenario, measured, target,
passed): they are printed after the run and, with AI_MEETING_RELIABILITY_FIGURES=<file>, written
as JSON for scripts/reliability-report (docs/reliability.md)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import pytest

os.environ.setdefault("PULUMI_SKIP_UPDATE_CHECK", "true")

# wall time per tier in the terminal summary (and AI_MEETING_TIER_TIMES=<file> as JSON)
pytest_plugins = ["tests.tier_times"]


@dataclass
class Figure:
    scenario: str
    measured: str
    target: str
    passed: bool


FIGURES: list[Figure] = []


@pytest.fixture
def record():
    def add(scenario: str, measured: str, target: str, passed: bool) -> None:
        FIGURES.append(Figure(scenario, measured, target, passed))

    return add


def pytest_terminal_summary(terminalreporter) -> None:
    if FIGURES:
        terminalreporter.section("reliability figures")
        for f in FIGURES:
            terminalreporter.write_line(f"{'pass' if f.passed else 'MISS'}  {f.scenario}: {f.measured} (target {f.target})")
    out = os.environ.get("AI_MEETING_RELIABILITY_FIGURES")
    if out:
        with open(out, "w") as fh:
            json.dump([asdict(f) for f in FIGURES], fh, indent=1)
