"""The engine helpers moved to tests/support/engine.py (one copy for every tier and bench/);
kept as a re-export for the tiers' existing imports."""

from tests.prerequisites import unavailable
from tests.support.engine import PulumiProject, Result, copy_project, require_engine, require_local_images, toolchain_env
from tests.support.paths import REPO

__all__ = ["REPO", "PulumiProject", "Result", "copy_project", "require_engine", "require_local_images", "toolchain_env",
           "unavailable"]
