"""Restart the machine's Docker engine the way a package upgrade or a crash-and-restart does:
SIGTERM to dockerd, wait until it is gone, start it again (scripts/start-dockerd). Every
container of every stack on the engine goes down with it: only for tests that own the engine."""

from __future__ import annotations

import subprocess
import time

from tests.e2e.engine import REPO


def restart_dockerd() -> None:
    pid = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()
    assert pid, "dockerd is not running"
    subprocess.run(["kill", "-TERM", *pid], check=True)
    for _ in range(120):
        if subprocess.run(["pidof", "dockerd"], capture_output=True).returncode != 0:
            break
        time.sleep(1)
    subprocess.run([str(REPO / "scripts" / "start-dockerd")], check=True, capture_output=True)
