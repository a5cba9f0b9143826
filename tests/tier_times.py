"""Wall time per test tier (pytest plugin, loaded by the root conftest.py).

Each test's setup + call + teardown time is added to its tier: the directory under tests/
(`tests/e2e/...` -> `e2e`), else the top directory (`policy`, `examples`). Module- and
session-scoped fixtures count in the tier of the first test that needs them. The terminal summary
gets a "tier wall times" section; with AI_MEETING_TIER_TIMES=<file> the same goes to that file as
JSON (.ci/run prints it with the setup time and the total)."""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict

import pytest

ENV = "AI_MEETING_TIER_TIMES"

_seconds: dict[str, float] = defaultdict(float)
_tests: dict[str, int] = defaultdict(int)
_failed: dict[str, set[str]] = defaultdict(set)
_start: list[float] = []


def tier_of(nodeid: str) -> str:
    parts = nodeid.split("::", 1)[0].split("/")
    if parts[0] == "tests" and len(parts) > 2:
        return parts[1]
    return parts[0] if len(parts) > 1 else "(root)"


def summary(seconds: dict[str, float], tests: dict[str, int], failed: dict[str, int],
            session_seconds: float, exitstatus: int) -> dict:
    tiers = {t: {"seconds": round(seconds[t], 1), "tests": tests.get(t, 0), "failed": failed.get(t, 0)}
             for t in sorted(seconds, key=lambda t: -seconds[t])}
    in_tests = sum(seconds.values())
    return {
        "tiers": tiers,
        "tests_seconds": round(in_tests, 1),
        "session_seconds": round(session_seconds, 1),
        # collection, plugins, and anything between tests
        "other_seconds": round(max(session_seconds - in_tests, 0.0), 1),
        "exitstatus": int(exitstatus),
    }


def format_lines(data: dict) -> list[str]:
    lines = [f"{t:<12} {v['seconds']:>8.1f} s  {v['tests']:>4} tests" + (f"  {v['failed']} failed" if v["failed"] else "")
             for t, v in data["tiers"].items()]
    lines.append(f"{'(other)':<12} {data['other_seconds']:>8.1f} s  collection and between tests")
    lines.append(f"{'total':<12} {data['session_seconds']:>8.1f} s  pytest exit status {data['exitstatus']}")
    return lines


def pytest_sessionstart(session) -> None:
    _start.append(time.monotonic())


def pytest_runtest_logreport(report) -> None:
    tier = tier_of(report.nodeid)
    _seconds[tier] += report.duration
    if report.when == "setup":
        _tests[tier] += 1
    if report.failed:
        _failed[tier].add(report.nodeid)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _seconds:
        return
    data = summary(_seconds, _tests, {t: len(ids) for t, ids in _failed.items()}, time.monotonic() - (_start[0] if _start else time.monotonic()), exitstatus)
    terminalreporter.section("tier wall times")
    for line in format_lines(data):
        terminalreporter.write_line(line)
    out = os.environ.get(ENV)
    if out:
        with open(out, "w") as fh:
            json.dump(data, fh, indent=1)
