"""Fixtures for tests of the locally built images (scripts/build-local-images).

Every test here runs real containers. Without a Docker engine the tests skip, except under
CI=true, where a missing engine is a failure. Missing images are built (the build script is
idempotent) under CI=true or AI_MEETING_BUILD_IMAGES=1, and otherwise skip.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.prerequisites import unavailable
from images_support import PREFIX, Sandbox, docker, image_tags

REPO_ROOT = Path(__file__).resolve().parents[2]


def pytest_configure(config):
    config.addinivalue_line("markers", "docker: needs a running Docker engine and the local images")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _skip_or_fail(reason: str):
    unavailable(reason)


@pytest.fixture(scope="session")
def docker_engine():
    try:
        proc = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        _skip_or_fail(f"no docker engine: {exc}")
    if proc.returncode != 0:
        _skip_or_fail("no docker engine (`docker info` failed; run scripts/start-dockerd)")
    return True


REQUIRED = ["base:bookworm", "postgres:15", "redis:7", "nginx:1.22", "web:demo-1",
            "api:demo-1", "api:demo-2"]


@pytest.fixture(scope="session")
def local_images(docker_engine):
    def missing():
        miss = [i for i in REQUIRED if docker("image", "inspect", f"{PREFIX}/{i}", check=False).returncode]
        for repo in ("minio", "mc"):
            if not image_tags(repo):
                miss.append(f"{repo}:*")
        return miss

    miss = missing()
    if miss and (_in_ci() or os.environ.get("AI_MEETING_BUILD_IMAGES") == "1"):
        subprocess.run([str(REPO_ROOT / "scripts" / "build-local-images")], check=True, timeout=3600)
        miss = missing()
    core_missing = [m for m in miss if not m.startswith(("minio", "mc"))]
    if core_missing:
        _skip_or_fail(f"local images missing: {', '.join(miss)} (run scripts/build-local-images)")
    images = {
        "postgres": f"{PREFIX}/postgres:15",
        "redis": f"{PREFIX}/redis:7",
        "nginx": f"{PREFIX}/nginx:1.22",
        "web": f"{PREFIX}/web:demo-1",
        "api1": f"{PREFIX}/api:demo-1",
        "api2": f"{PREFIX}/api:demo-2",
    }
    for repo in ("minio", "mc"):
        tags = sorted(image_tags(repo))
        images[repo] = f"{PREFIX}/{repo}:{tags[-1]}" if tags else None
    return images


@pytest.fixture
def with_minio(local_images):
    """local_images, requiring the MinIO server and mc images too."""
    if not (local_images["minio"] and local_images["mc"]):
        _skip_or_fail("minio/mc images missing (scripts/build-local-images builds them with Go)")
    return local_images


@pytest.fixture
def sandbox(docker_engine):
    box = Sandbox()
    try:
        yield box
    finally:
        box.cleanup()
