"""redis-server command line (plan §4.5, §12.2; R8, R19), as a pure function.

The password never appears in the arguments (they are visible in `docker inspect` and
`ps`): the container gets REDIS_PASSWORD in its environment and a shell expands it at
start. Health checks use redis-cli with REDISCLI_AUTH in the environment.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

_MEM_RE = re.compile(r"^[0-9]+(b|k|kb|m|mb|g|gb)?$", re.IGNORECASE)
POLICIES = (
    "noeviction", "allkeys-lru", "allkeys-lfu", "allkeys-random",
    "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl",
)


@dataclass(frozen=True)
class RedisSettings:
    maxmemory: str = "2gb"
    maxmemory_policy: str = "allkeys-lru"
    appendonly: bool = True
    appendfsync: str = "everysec"
    data_dir: str = "/data"

    def __post_init__(self) -> None:
        if not isinstance(self.maxmemory, str) or not _MEM_RE.match(self.maxmemory):
            raise ValueError(f"maxmemory: {self.maxmemory!r} must look like 2gb, 512mb or 0")
        if self.maxmemory_policy not in POLICIES:
            raise ValueError(f"maxmemory_policy: {self.maxmemory_policy!r} must be one of {', '.join(POLICIES)}")
        if not isinstance(self.appendonly, bool):
            raise ValueError(f"appendonly: {self.appendonly!r} must be a bool")
        if self.appendfsync not in ("always", "everysec", "no"):
            raise ValueError(f"appendfsync: {self.appendfsync!r} must be always, everysec or no")
        if not re.fullmatch(r"/[A-Za-z0-9._/-]*", self.data_dir):
            raise ValueError(f"data_dir: {self.data_dir!r} must be an absolute path")


def render_redis_args(s: RedisSettings) -> list[str]:
    """Arguments after `redis-server` (no password: see render_redis_command)."""
    return [
        "--dir", s.data_dir,
        "--appendonly", "yes" if s.appendonly else "no",
        "--appendfsync", s.appendfsync,
        "--maxmemory", s.maxmemory.lower(),
        "--maxmemory-policy", s.maxmemory_policy,
    ]


def render_redis_command(s: RedisSettings, password_env: str = "REDIS_PASSWORD") -> list[str]:
    """Container command: a shell reads the password from the environment at start and hands
    it to redis-server as a config line on stdin (`redis-server -`), never on a command line:
    argv is visible to every local user (`ps`) for as long as it exists."""
    if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", password_env):
        raise ValueError(f"password_env: {password_env!r} is not an environment variable name")
    args = " ".join(shlex.quote(a) for a in render_redis_args(s))
    # exec: redis-server becomes PID 1 and gets SIGTERM from `docker stop` (clean AOF/RDB save).
    # "$@" (after the $0 placeholder) lets a caller append arguments, e.g. --port in tests.
    # The here-document reaches redis-server through a pipe or temp file, not argv; sed escapes
    # `\` and `"` for Redis's quoted config syntax (its argv holds no secret either).
    script = (
        f"pw=$(printf '%s' \"${password_env}\" | sed 's/[\\\\\"]/\\\\&/g')\n"
        f'exec redis-server - {args} "$@" <<AI_MEETING_EOF\nrequirepass "$pw"\nAI_MEETING_EOF'
    )
    return ["sh", "-c", script, "redis-server"]


def redis_healthcheck_test() -> list[str]:
    """Healthcheck: redis-cli reads the password from REDISCLI_AUTH (set on the container)."""
    return ["CMD-SHELL", "redis-cli ping | grep -q PONG"]
