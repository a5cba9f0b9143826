"""The stack's outputs as its last update left them, read once per run through the CLI
(`pulumi stack output --json`): the release history builds on them and the PostgreSQL major
guard compares with them. Not a StackReference to the stack itself: `pulumi refresh` would
report that as drift after every update."""

from __future__ import annotations

import json
import os
import subprocess
from functools import cache
from typing import Callable

import pulumi


@cache
def previous_outputs(stack: str, warn: Callable[[str], None] = pulumi.log.warn) -> dict:
    """{} on a first deploy, or when the CLI cannot say (with a warning)."""
    try:
        proc = subprocess.run(["pulumi", "stack", "output", "--json", "--stack", stack],
                              capture_output=True, text=True, timeout=120, cwd=os.getcwd())
    except (OSError, subprocess.TimeoutExpired) as exc:
        warn(f"could not run `pulumi stack output` ({exc}): the release history starts anew, the "
             "PostgreSQL major-version guard runs on the server only")
        return {}
    if proc.returncode != 0:
        warn(f"could not read the stack's last outputs ({proc.stderr.strip()[:200]})")
        return {}
    try:
        outputs = json.loads(proc.stdout or "{}")
    except ValueError:
        return {}
    return outputs if isinstance(outputs, dict) else {}
