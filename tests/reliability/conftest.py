"""The reliability tier: faults, durability, secrets and exposure, against a stack deployed
through the real engine. Each scenario records the figure it measured next to its target;
scripts/reliability-report turns them into docs/reliability.md."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import pytest


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
