"""The machine a benchmark ran on: what docs/benchmarks.md prints above the figures."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from pathlib import Path


def _out(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_facts() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = m.group(1).strip() if (m := re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)) else platform.processor()
    mem_kb = int(m.group(1)) if (m := re.search(r"^MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M)) else 0
    os_name = m.group(1) if (m := re.search(r'^PRETTY_NAME="(.+)"', Path("/etc/os-release").read_text(), re.M)) else ""
    wrk = _out(["wrk", "--version"]) or ""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "os": os_name,
        "kernel": platform.release(),
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "docker": _out(["docker", "version", "--format", "{{.Server.Version}}"]),
        "wrk": wrk.splitlines()[0].split(" Copyright")[0] if wrk else "",
        "load_start": [round(x, 2) for x in os.getloadavg()],
        "git": _out(["git", "-C", str(Path(__file__).resolve().parents[1]), "rev-parse", "--short", "HEAD"]),
    }
