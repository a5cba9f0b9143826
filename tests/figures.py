"""Reliability figures (pytest plugin, loaded by the root conftest.py) and the page they make
(docs/reliability.md, via scripts/reliability-report).

A test records what it measured with the `record` fixture:

    record(scenario, measured, target, passed)   a measurement against a published target
    record.figure(scenario, measured)            a figure with no target ("—"): never counted as met
    record.expect(scenario, target)              declares a row up front

and may declare the rows it will record with the `figures` marker (scenario strings may use the
test's parameters: `@pytest.mark.figures(("crash of {service}", "<= 30 s"))`).

The rules that make the page trustworthy:
- a recorded MISS fails the test, even if the test forgot to assert it;
- a declared row the test did not record (the test or a fixture failed first, or the test forgot)
  becomes a MISS row "not measured", and a test that passed without recording it fails;
- with AI_MEETING_RELIABILITY_FIGURES=<file> the figures go to that file as JSON together with
  their provenance: commit, date, machine, tools, the pytest exit status and the test counts.

`python -m tests.figures page FILE OUT` writes the page, `python -m tests.figures summary FILE`
prints its one-line summary; both refuse a file that is not a figures file.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

ENV = "AI_MEETING_RELIABILITY_FIGURES"
KIND = "ai-meeting reliability figures"
VERSION = 1
NO_TARGET = "—"
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Figure:
    scenario: str
    measured: str
    target: str
    passed: bool | None  # None: a figure without a target
    test: str = ""


FIGURES: list[Figure] = []
_declared: dict[str, list[tuple[str, str]]] = {}  # nodeid -> [(scenario, target)] from record.expect


class Recorder:
    def __init__(self, nodeid: str):
        self.nodeid = nodeid

    def __call__(self, scenario: str, measured: str, target: str, passed: bool) -> None:
        if not isinstance(passed, bool):
            raise TypeError(f"record({scenario!r}): passed must be a bool (use record.figure for a figure without a target)")
        if not target or target == NO_TARGET:
            raise ValueError(f"record({scenario!r}): a target is required (use record.figure for a figure without one)")
        FIGURES.append(Figure(scenario, str(measured), target, passed, self.nodeid))

    def figure(self, scenario: str, measured: str) -> None:
        FIGURES.append(Figure(scenario, str(measured), NO_TARGET, None, self.nodeid))

    def expect(self, scenario: str, target: str) -> None:
        _declared.setdefault(self.nodeid, []).append((scenario, target))


@pytest.fixture
def record(request) -> Recorder:
    return Recorder(request.node.nodeid)


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "figures(*(scenario, target)): reliability rows this test records; "
                                       "one it does not record becomes a MISS row (tests/figures.py)")


def declared(item) -> list[tuple[str, str]]:
    params = getattr(getattr(item, "callspec", None), "params", {})
    rows = []
    for mark in item.iter_markers("figures"):
        for scenario, target in mark.args:
            rows.append((scenario.format(**params), target))
    return rows + _declared.get(item.nodeid, [])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when not in ("setup", "call") or (report.when == "setup" and report.passed) or report.skipped:
        return
    mine = [f for f in FIGURES if f.test == item.nodeid]
    recorded = {f.scenario for f in mine}
    missing = [(s, t) for s, t in declared(item) if s not in recorded]
    for scenario, target in missing:
        why = f"not measured: the test failed in {report.when}" if report.failed else "not recorded by the test"
        FIGURES.append(Figure(scenario, why, target, False, item.nodeid))
    if report.when == "call" and report.passed:
        missed = [f for f in mine if f.passed is False]
        if missed or missing:
            report.outcome = "failed"
            lines = [f"missed target: {f.scenario}: measured {f.measured}, target {f.target}" for f in missed]
            lines += [f"declared but not recorded: {s}" for s, _ in missing]
            report.longrepr = "\n".join(lines)


# ---- provenance --------------------------------------------------------------------------------


def _out(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=REPO).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


_code: dict = {}  # the code the tests ran: taken when the session starts, not when it ends


def code_under_test() -> dict:
    dirty = _out("git", "status", "--porcelain", "--untracked-files=no")
    return {
        "commit": _out("git", "rev-parse", "HEAD") or "unknown",
        "commit_line": _out("git", "log", "-1", "--format=%s"),
        "dirty": len(dirty.splitlines()),  # tracked files changed against the commit
        "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def pytest_sessionstart(session) -> None:
    if os.environ.get(ENV):
        _code.update(code_under_test())


def provenance(exitstatus: int, counts: dict[str, int]) -> dict:
    code = _code or code_under_test()
    return {
        **code,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()} ({os.cpu_count()} cores, {platform.system()} {platform.release()})",
        "docker": _out("docker", "version", "-f", "{{.Server.Version}}") or "unknown",
        "pulumi": _out("pulumi", "version") or "unknown",
        "pytest_exitstatus": int(exitstatus),
        "tests": counts,
        "args": shlex.join(sys.argv[1:]),
    }


def document(figures: list[Figure], exitstatus: int, counts: dict[str, int]) -> dict:
    return {"kind": KIND, "version": VERSION, "provenance": provenance(exitstatus, counts),
            "figures": [asdict(f) for f in figures]}


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if FIGURES:
        terminalreporter.section("reliability figures")
        for f in FIGURES:
            mark = {True: "met ", False: "MISS", None: "fig "}[f.passed]
            terminalreporter.write_line(f"{mark}  {f.scenario}: {f.measured} (target {f.target})")
    out = os.environ.get(ENV)
    if out:
        stats = terminalreporter.stats
        counts = {k: len([r for r in stats.get(k, []) if getattr(r, "when", "call") in ("call", "setup", "teardown")])
                  for k in ("passed", "failed", "error", "skipped")}
        counts["with_figures"] = len({f.test for f in FIGURES})
        doc = document(FIGURES, exitstatus, counts)
        Path(out).write_text(json.dumps(doc, indent=1) + "\n")
        terminalreporter.write_line(f"reliability figures -> {out}: {summary_line(doc)}")


# ---- reading a figures file and writing the page -------------------------------------------------


class NotFigures(ValueError):
    pass


def load(path: str | Path) -> dict:
    """The figures file, checked: refuses any JSON that is not one."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise NotFigures(f"{path}: not readable JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise NotFigures(f"{path}: not a figures file (no \"kind\": \"{KIND}\"; written by a pytest run "
                         f"with {ENV}=<file>)")
    if doc.get("version") != VERSION:
        raise NotFigures(f"{path}: figures file version {doc.get('version')!r}, this reader knows {VERSION}")
    prov = doc.get("provenance")
    need = ("commit", "date", "machine", "pytest_exitstatus", "tests")
    if not isinstance(prov, dict) or any(k not in prov for k in need):
        raise NotFigures(f"{path}: provenance missing or incomplete (needs {', '.join(need)})")
    if not isinstance(prov["pytest_exitstatus"], int) or not isinstance(prov["tests"], dict):
        raise NotFigures(f"{path}: provenance has a bad exit status or test counts")
    figures = doc.get("figures")
    if not isinstance(figures, list):
        raise NotFigures(f"{path}: \"figures\" is not a list")
    for i, f in enumerate(figures):
        if not isinstance(f, dict) or set(f) != {"scenario", "measured", "target", "passed", "test"}:
            raise NotFigures(f"{path}: figure {i} is not a row (scenario, measured, target, passed, test): {f!r}")
        if not all(isinstance(f[k], str) for k in ("scenario", "measured", "target", "test")) or f["passed"] not in (True, False, None):
            raise NotFigures(f"{path}: figure {i} has a field of the wrong type: {f!r}")
        if (f["passed"] is None) != (f["target"] == NO_TARGET):
            raise NotFigures(f"{path}: figure {i}: a row without a target must be a figure (passed null), and only it: {f!r}")
    return doc


def counts(doc: dict) -> dict[str, int]:
    figures = doc["figures"]
    return {"met": sum(f["passed"] is True for f in figures), "missed": sum(f["passed"] is False for f in figures),
            "figures": sum(f["passed"] is None for f in figures)}


def summary_line(doc: dict) -> str:
    c, prov = counts(doc), doc["provenance"]
    t = prov["tests"]
    return (f"{c['met']} met, {c['missed']} missed, {c['figures']} figures without a target "
            f"({len(doc['figures'])} rows from {t.get('with_figures', '?')} tests; run: {t.get('passed', 0)} passed, "
            f"{t.get('failed', 0)} failed, {t.get('error', 0)} errors, {t.get('skipped', 0)} skipped; "
            f"pytest exit status {prov['pytest_exitstatus']})")


def page(doc: dict, how: str = "") -> str:
    prov, c = doc["provenance"], counts(doc)
    commit = prov["commit"][:12] + (f" + {prov['dirty']} changed files" if prov.get("dirty") else "")
    lines = [
        "# Reliability figures",
        "",
        "Written by `scripts/reliability-report` from the tests marked `reliability` (tests/reliability:",
        "the dev stack; tests/prod: the prod test server), which deploy through the real Pulumi engine",
        "and then break, attack or misconfigure the stack. Each row is one measurement of that run.",
        "A row with a target is that test's assertion: a miss fails the test (tests/figures.py fails a",
        "test that recorded a miss, and turns a row the test declared but never recorded, because it",
        "failed first, into a miss). A row whose target is \"—\" is a figure only, never counted as met.",
        "",
        "## Provenance",
        "",
        f"- commit: `{commit}`" + (f" ({prov['commit_line']})" if prov.get("commit_line") else ""),
        f"- date: {prov.get('started', '?')} to {prov['date']}",
        f"- machine: {prov['machine']}; Docker {prov.get('docker', '?')}, Pulumi {prov.get('pulumi', '?')}",
        f"- pytest exit status: **{prov['pytest_exitstatus']}**"
        + (f" (`pytest {prov['args']}`)" if prov.get("args") else "") + (f"; {how}" if how else ""),
        f"- tests: {prov['tests'].get('passed', 0)} passed, {prov['tests'].get('failed', 0)} failed, "
        f"{prov['tests'].get('error', 0)} errors, {prov['tests'].get('skipped', 0)} skipped; "
        f"{prov['tests'].get('with_figures', '?')} of them recorded the rows below",
        f"- rows: **{c['met']} met, {c['missed']} missed**, {c['figures']} figures without a target",
        "",
        "| scenario | measured | target | pass |",
        "|---|---|---|---|",
    ]
    cell = {True: "yes", False: "**no**", None: "figure"}
    lines += [f"| {f['scenario']} | {f['measured']} | {f['target']} | {cell[f['passed']]} |" for f in doc["figures"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "summary":
        try:
            print(summary_line(load(argv[1])))
        except NotFigures as e:
            print(f"reliability figures: {e}", file=sys.stderr)
            return 2
        return 0
    if len(argv) >= 3 and argv[0] == "page":
        try:
            doc = load(argv[1])
        except NotFigures as e:
            print(f"reliability-report: {e}", file=sys.stderr)
            return 2
        Path(argv[2]).write_text(page(doc, " ".join(argv[3:])))
        print(f"reliability-report: {summary_line(doc)} -> {argv[2]}")
        return 0
    print("usage: python -m tests.figures summary FILE | page FILE OUT [note]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
