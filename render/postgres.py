"""Init SQL for PostgreSQL (plan §6, R7, R19), as a pure function."""
from __future__ import annotations

import re

_TZ_RE = re.compile(r"^[A-Za-z0-9_+\-/]{1,64}$")


def quote_ident(name: str) -> str:
    """SQL identifier, always double-quoted (so case and odd characters survive)."""
    if not isinstance(name, str) or not name or "\x00" in name or len(name.encode()) > 63:
        raise ValueError(f"database: {name!r} must be a non-empty identifier of at most 63 bytes")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """SQL string literal; standard_conforming_strings is on by default since PostgreSQL 9.1."""
    if "\x00" in value:
        raise ValueError("NUL byte in SQL literal")
    return "'" + value.replace("'", "''") + "'"


def render_init_sql(database: str, timezone: str) -> str:
    if not isinstance(timezone, str) or not _TZ_RE.match(timezone):
        raise ValueError(f"timezone: {timezone!r} must be an IANA zone name such as Asia/Shanghai")
    db = quote_ident(database)
    tz = quote_literal(timezone)
    return f"""\
-- Rendered by render/postgres.py (plan §6). Runs from /docker-entrypoint-initdb.d on the
-- first start of an empty data directory (the entrypoint runs psql with ON_ERROR_STOP=1);
-- every statement is idempotent so it can be re-run.
-- uuid_generate_v4() for primary keys.
CREATE EXTENSION IF NOT EXISTS "uuid-ossp";

-- Slow-query analysis (plan §10, R19); needs shared_preload_libraries=pg_stat_statements
-- on the server command line to collect statistics.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;

-- The plan's `SET timezone` only lasts for this session: store it on the database, so
-- every new connection gets it.
ALTER DATABASE {db} SET timezone TO {tz};
SET timezone TO {tz};
"""


def render_postgres_args(extra_settings: dict[str, str] | None = None) -> list[str]:
    """Server command: preload pg_stat_statements so the extension above collects data."""
    settings = {"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "all"}
    settings.update(extra_settings or {})
    args = ["postgres"]
    for key, value in settings.items():
        if not re.fullmatch(r"[a-z_][a-z0-9_.]*", key) or not re.fullmatch(r"[A-Za-z0-9_.,:/+-]+", value):
            raise ValueError(f"postgres setting {key!r}={value!r} is not a plain key=value")
        args += ["-c", f"{key}={value}"]
    return args
