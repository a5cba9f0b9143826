"""No test skips or quietly returns under CI=true: a missing tool goes through
tests/prerequisites.py's `unavailable`, which skips with the reason outside CI and fails in CI.

Every test file is read (its syntax tree, so strings and comments do not count) for:
- pytest.skip / skipif / importorskip / xfail (call, decorator or `pytestmark`), `from pytest
  import skip`, unittest's skip decorators and `self.skipTest`;
- a bare `return` in a test or fixture under an `if` that probes for a tool or a file
  (`which(`, `find_spec(`, `exists(`, `is_file(`, `is_dir(`, `environ`, `IN_CI`), or in an
  `except ImportError / ModuleNotFoundError / FileNotFoundError` handler: the test then passes
  without having checked anything.
The only place allowed to skip is tests/prerequisites.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import REPO

ALLOWED = {REPO / "tests" / "prerequisites.py"}
SKIP_NAMES = {"skip", "skipif", "importorskip", "xfail", "skipTest", "skipIf", "skipUnless"}
SKIP_OWNERS = {"pytest", "unittest", "self", "mark"}
PROBES = ("which(", "find_spec(", "exists(", "is_file(", "is_dir(", "environ", "IN_CI")
MISSING_ERRORS = ("ImportError", "ModuleNotFoundError", "FileNotFoundError")
SKIP_DIRS = {".git", ".venv", "node_modules", ".pulumi-state", "__pycache__"}


def scanned_files() -> list[Path]:
    files = []
    for p in REPO.rglob("*.py"):
        rel = p.relative_to(REPO)
        if SKIP_DIRS & set(rel.parts) or p in ALLOWED:
            continue
        if rel.parts[0] == "tests" or p.name.startswith("test_") or p.name == "conftest.py":
            files.append(p)
    return sorted(files)


def _root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Call)):
        node = node.value if isinstance(node, ast.Attribute) else node.func
    return node.id if isinstance(node, ast.Name) else None


def _bare_return(nodes: list[ast.stmt]) -> ast.Return | None:
    for stmt in nodes:
        if isinstance(stmt, ast.Return) and (stmt.value is None or (isinstance(stmt.value, ast.Constant) and stmt.value.value is None)):
            return stmt
    return None


def _is_test_or_fixture(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return fn.name.startswith("test") or any("fixture" in ast.unparse(d) for d in fn.decorator_list)


def findings(source: str, name: str = "<string>") -> list[str]:
    """Every skip or tool-guarded early return in `source`, as 'name:line: what'."""
    tree = ast.parse(source)
    found: set[tuple[int, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in SKIP_NAMES and _root(node.value) in SKIP_OWNERS:
            found.add((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom) and node.module in ("pytest", "unittest"):
            for alias in node.names:
                if alias.name in SKIP_NAMES:
                    found.add((node.lineno, f"from {node.module} import {alias.name}"))
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or not _is_test_or_fixture(fn):
            continue
        # names bound to a probe in this function: `compose = shutil.which("docker-compose")`
        probed = {t.id for a in ast.walk(fn) if isinstance(a, ast.Assign) and any(p in ast.unparse(a.value) for p in PROBES)
                  for t in a.targets if isinstance(t, ast.Name)}
        for node in ast.walk(fn):
            if isinstance(node, ast.If):
                cond = ast.unparse(node.test)
                names = {n.id for n in ast.walk(node.test) if isinstance(n, ast.Name)}
                ret = _bare_return(node.body)
                if ret is not None and (any(p in cond for p in PROBES) or names & probed):
                    found.add((ret.lineno, f"return when {cond}"))
            elif isinstance(node, ast.ExceptHandler) and node.type is not None \
                    and any(e in ast.unparse(node.type) for e in MISSING_ERRORS):
                ret = _bare_return(node.body)
                if ret is not None:
                    found.add((ret.lineno, f"return on {ast.unparse(node.type)}"))
    return [f"{name}:{line}: {what}" for line, what in sorted(found)]


def test_no_test_skips_or_returns_early_except_through_unavailable():
    files = scanned_files()
    assert len(files) > 30, f"found only {len(files)} test files: is the scan looking in the right place?"
    problems = [f for p in files for f in findings(p.read_text(), str(p.relative_to(REPO)))]
    assert problems == [], ("skips or early returns that would hide a missing tool under CI=true; "
                            "call tests.prerequisites.unavailable(reason) instead:\n" + "\n".join(problems))


PLANTED = {
    "skipif decorator": '@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="x")\ndef test_a():\n    pass\n',
    "skip call": 'def test_a():\n    if not ok():\n        pytest.skip("no tool")\n',
    "importorskip": 'harness = pytest.importorskip("tests.unit.harness")\n',
    "module pytestmark": 'pytestmark = pytest.mark.skip(reason="later")\n',
    "xfail": '@pytest.mark.xfail\ndef test_a():\n    assert 0\n',
    "from pytest import skip": 'from pytest import skip\n',
    "unittest skipTest": 'class T:\n    def test_a(self):\n        self.skipTest("x")\n',
    "return when the tool is missing": ('def test_a():\n    compose = shutil.which("docker-compose")\n'
                                        '    if compose is None:\n        return\n    check(compose)\n'),
    "return when a file is missing": 'def test_a():\n    if not SOURCES.exists():\n        return None\n',
    "return on ImportError": 'def test_a():\n    try:\n        import yaml\n    except ImportError:\n        return\n',
    "return in a fixture": ('@pytest.fixture\ndef server():\n    if shutil.which("nginx") is None:\n'
                            '        return\n    yield start()\n'),
}


@pytest.mark.parametrize("source", PLANTED.values(), ids=PLANTED.keys())
def test_the_scan_finds_a_planted_skip(source):
    assert len(findings(source)) == 1, findings(source)


ALLOWED_SOURCES = {
    "unavailable": 'def test_a():\n    if shutil.which("nginx") is None:\n        unavailable("no nginx")\n    run()\n',
    "helper returning a value": 'def docker_ok():\n    if not shutil.which("docker"):\n        return False\n    return True\n',
    "cleanup helper": 'def cleanup():\n    if not shutil.which("docker"):\n        return\n    rm()\n',
    "early return on a result": 'def test_a():\n    for x in xs:\n        if x.done:\n            return\n',
    "the words in a string": 'def test_a():\n    assert "pytest.skip(" not in text\n',
    "another object's skip": 'def test_a():\n    assert args.skip is False\n',
}


@pytest.mark.parametrize("source", ALLOWED_SOURCES.values(), ids=ALLOWED_SOURCES.keys())
def test_the_scan_leaves_ordinary_code_alone(source):
    assert findings(source) == []
