"""Apply a proposed program change (scripts/bench --variant PATCH) to the bench's copies of the
program, never to the repo. Its own module: bench/__main__.py and bench/sides.py both use it."""

from __future__ import annotations

import subprocess
from pathlib import Path


def apply_patch(patch: Path, directory: Path) -> None:
    res = subprocess.run(["patch", "-p1", "--forward", "-s", "-d", str(directory), "-i", str(patch)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{patch} does not apply to this commit's program:\n{res.stdout}{res.stderr}")
