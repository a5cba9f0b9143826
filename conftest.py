"""Shared test settings. Each tier's own conftest decides how to find its tools; under
CI=true a missing tool is a failure, never a silent skip.

Any test can record a measured figure with the `record` fixture (tests/figures.py: scenario,
measured, target, passed; `record.figure` for a figure without a target, `record.expect` and the
`figures` marker to declare rows up front): a recorded miss fails the test, a declared row never
recorded becomes a MISS row; they are printed after the run and, with
AI_MEETING_RELIABILITY_FIGURES=<file>, written as JSON with their provenance (commit, date,
machine, pytest exit status, test counts) for scripts/reliability-report (docs/reliability.md)."""

from __future__ import annotations

import os

os.environ.setdefault("PULUMI_SKIP_UPDATE_CHECK", "true")

# wall time per tier in the terminal summary (and AI_MEETING_TIER_TIMES=<file> as JSON)
pytest_plugins = ["tests.tier_times", "tests.figures"]
