"""What every tier (and bench/) shares: paths, the CI flag, the docker CLI, the Pulumi engine.

    from tests.support import REPO, IN_CI, unavailable, docker, toolchain_env, require_engine

Nothing here depends on a test tier: tiers and bench/ depend on this package, never on each other.
"""

from tests.prerequisites import IN_CI, unavailable
from tests.support.docker import DockerError, docker
from tests.support.engine import PulumiProject, Result, copy_project, require_engine, require_local_images, toolchain_env
from tests.support.paths import CACHE, REPO, TOOLCHAIN_BIN

__all__ = [
    "CACHE", "IN_CI", "REPO", "TOOLCHAIN_BIN", "DockerError", "PulumiProject", "Result", "copy_project",
    "docker", "require_engine", "require_local_images", "toolchain_env", "unavailable",
]
