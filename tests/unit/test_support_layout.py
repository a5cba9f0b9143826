"""Test plumbing has one home: bench/ and tests/support depend on no test tier, and bench/'s
modules import each other without a cycle (function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import REPO


def imports_of(path: Path, package: str) -> set[str]:
    """Absolute module names `path` imports anywhere in it (relative ones resolved in `package`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return found


def modules(directory: Path, package: str) -> dict[str, Path]:
    return {(package if p.stem == "__init__" else f"{package}.{p.stem}"): p for p in sorted(directory.glob("*.py"))}


def test_bench_and_support_depend_on_no_test_tier():
    tiers = {p.name for p in (REPO / "tests").iterdir() if p.is_dir() and p.name not in ("support", "__pycache__")}
    for directory, package in ((REPO / "bench", "bench"), (REPO / "tests" / "support", "tests.support")):
        for name, path in modules(directory, package).items():
            bad = sorted(m for m in imports_of(path, package) if m.split(".")[0] == "tests" and len(m.split(".")) > 1
                         and m.split(".")[1] in tiers)
            assert bad == [], f"{name} imports a test tier: {bad} (use tests.support)"


def test_no_import_cycle_in_bench():
    mods = modules(REPO / "bench", "bench")
    graph = {name: {m for m in imports_of(path, "bench") if m in mods and m != name} for name, path in mods.items()}

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(node):] + [node]))
        for nxt in sorted(graph[node]):
            visit(nxt, stack + [node])

    for name in graph:
        visit(name, [])


def test_the_cycle_check_sees_a_function_level_import(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    from .b import g\n")
    assert "pkg.b" in imports_of(tmp_path / "a.py", "pkg")


def test_docker_helper_fails_as_both_old_helpers_did(tmp_path, monkeypatch):
    """bench/ and the guardrails caught subprocess.CalledProcessError; the images tests expected an
    AssertionError naming the command and its output: DockerError is both."""
    import subprocess

    import pytest

    from tests.support import DockerError, docker

    fake = tmp_path / "docker"
    fake.write_text('#!/bin/sh\necho "out $*"; echo "no such container" >&2; exit 3\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert docker("ps", check=False).returncode == 3
    with pytest.raises(subprocess.CalledProcessError) as err:
        docker("rm", "x")
    assert isinstance(err.value, AssertionError) and isinstance(err.value, DockerError)
    assert err.value.returncode == 3 and err.value.stdout == "out rm x\n"
    assert "docker rm x -> 3" in str(err.value) and "no such container" in str(err.value)
