"""The reliability figures plugin (tests/figures.py) on a throwaway test suite, no engine: a
recorded miss fails its test, a declared row that was never recorded becomes a MISS row, the
figures file carries its provenance, and the page reader refuses what is not a figures file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import figures

REPO = Path(__file__).resolve().parents[2]

SUITE = '''
import pytest

@pytest.fixture
def broken():
    raise RuntimeError("the stack did not deploy")

def test_met(record):
    record("met row", "2 s", "<= 30 s", True)

def test_missed_but_not_asserted(record):
    record("missed row", "40 s", "<= 30 s", False)

def test_figure_only(record):
    record.figure("figure row", "12 in 3 s")

@pytest.mark.figures(("never measured {service}", "<= 30 s"))
@pytest.mark.parametrize("service", ["redis"])
def test_fixture_fails_first(broken, record, service):
    record("never measured redis", "1 s", "<= 30 s", True)

def test_fails_before_recording(record):
    record.expect("declared then crashed", "0 lost")
    assert False, "crashed before measuring"

def test_forgot_to_record(record):
    record.expect("declared, never recorded", "0 lost")
'''


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("suite")
    (d / "conftest.py").write_text('pytest_plugins = ["tests.figures"]\n')
    (d / "test_suite.py").write_text(SUITE)
    out = d / "figures.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "AI_MEETING_RELIABILITY_FIGURES": str(out)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir", str(d), str(d)],
                          cwd=d, env=env, capture_output=True, text=True, timeout=120)
    return proc, out


def rows(path: Path) -> dict[str, dict]:
    return {f["scenario"]: f for f in json.loads(path.read_text())["figures"]}


def test_a_recorded_miss_fails_the_test_and_declared_rows_are_never_lost(run):
    proc, out = run
    assert proc.returncode == 1, proc.stdout
    assert "1 failed" not in proc.stdout
    tail = proc.stdout.splitlines()[-1]
    assert "4 failed, 2 passed" in tail or ("3 failed" in tail and "1 error" in tail), proc.stdout
    assert "missed target: missed row: measured 40 s, target <= 30 s" in proc.stdout
    r = rows(out)
    assert r["met row"]["passed"] is True
    assert r["missed row"]["passed"] is False
    assert r["figure row"]["passed"] is None and r["figure row"]["target"] == "—"
    assert r["never measured redis"] == {"scenario": "never measured redis", "measured": "not measured: the test failed in setup",
                                         "target": "<= 30 s", "passed": False,
                                         "test": "test_suite.py::test_fixture_fails_first[redis]"}
    assert r["declared then crashed"]["measured"] == "not measured: the test failed in call"
    assert r["declared, never recorded"]["passed"] is False


def test_the_figures_file_carries_its_provenance(run):
    proc, out = run
    doc = figures.load(out)
    prov = doc["provenance"]
    assert prov["pytest_exitstatus"] == 1
    assert len(prov["commit"]) == 40 and prov["date"].endswith("UTC") and "cores" in prov["machine"]
    assert prov["tests"]["passed"] == 2 and prov["tests"]["with_figures"] == 6, prov["tests"]
    assert figures.counts(doc) == {"met": 1, "missed": 4, "figures": 1}
    page = figures.page(doc)
    assert f"- commit: `{prov['commit'][:12]}" in page and "pytest exit status: **1**" in page
    assert "| figure row | 12 in 3 s | — | figure |" in page
    assert "| missed row | 40 s | <= 30 s | **no** |" in page
    assert "1 met, 4 missed" in figures.summary_line(doc)


@pytest.mark.parametrize("content", [
    "[]",
    '[{"scenario": "x", "measured": "1", "target": "1", "passed": true}]',
    '{"figures": []}',
    '{"kind": "ai-meeting reliability figures", "version": 1, "figures": []}',
    "not json",
])
def test_the_page_writer_refuses_what_is_not_a_figures_file(tmp_path, content):
    path = tmp_path / "f.json"
    path.write_text(content)
    with pytest.raises(figures.NotFigures):
        figures.load(path)
    proc = subprocess.run([str(REPO / "scripts/reliability-report"), "--from", str(path), str(tmp_path / "page.md")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "reliability-report: " in proc.stderr and not (tmp_path / "page.md").exists(), proc.stderr


def test_a_row_with_a_target_must_have_a_verdict_and_a_figure_must_not(run, tmp_path):
    _, out = run
    doc = json.loads(out.read_text())
    doc["figures"][0]["passed"] = None  # a target without a verdict
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(figures.NotFigures, match="without a target"):
        figures.load(bad)
    with pytest.raises(TypeError):
        figures.Recorder("x")("s", "1", "<= 1 s", 1)
    with pytest.raises(ValueError):
        figures.Recorder("x")("s", "1", "—", True)
