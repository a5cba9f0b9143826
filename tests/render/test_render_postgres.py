"""render_init_sql on a real PostgreSQL 15 server (temp cluster, unix socket only)."""
from __future__ import annotations

import pytest

from render.postgres import quote_ident, render_init_sql, render_postgres_args

from render_testlib import Cluster


def apply(cluster: Cluster, db: str, sql: str) -> None:
    # As docker-entrypoint-initdb.d does: psql -v ON_ERROR_STOP=1 --no-psqlrc -f file
    r = cluster.psql(db, sql=sql, check=False)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("db,tz", [("ai_meeting", "Asia/Shanghai"), ('Odd-Name "db"', "America/New_York")])
def test_init_sql_on_real_postgres(cluster, db, tz):
    cluster.psql("postgres", sql=f"DROP DATABASE IF EXISTS {quote_ident(db)}; CREATE DATABASE {quote_ident(db)};")
    sql = render_init_sql(db, tz)
    apply(cluster, db, sql)
    apply(cluster, db, sql)  # idempotent: a second run succeeds and changes nothing

    # A new session (not the one that ran the script) gets the configured zone.
    assert cluster.psql(db, "-c", "SHOW timezone").stdout.strip() == tz
    # ...and a session in another database does not (it is per database, not global).
    assert cluster.psql("postgres", "-c", "SHOW timezone").stdout.strip() != tz
    uuid = cluster.psql(db, "-c", "SELECT uuid_generate_v4()").stdout.strip()
    assert len(uuid) == 36 and uuid[14] == "4"
    exts = cluster.psql(db, "-c", "SELECT extname FROM pg_extension ORDER BY 1").stdout.split()
    assert {"uuid-ossp", "pg_stat_statements"} <= set(exts)
    # pg_stat_statements collects (needs the preload from render_postgres_args).
    n = cluster.psql(db, "-c", "SELECT count(*) FROM pg_stat_statements").stdout.strip()
    assert int(n) > 0
    cluster.psql("postgres", sql=f"DROP DATABASE {quote_ident(db)};")


def test_init_sql_text():
    sql = render_init_sql("ai_meeting", "Asia/Shanghai")
    assert 'CREATE EXTENSION IF NOT EXISTS "uuid-ossp";' in sql
    assert "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;" in sql
    assert "ALTER DATABASE \"ai_meeting\" SET timezone TO 'Asia/Shanghai';" in sql


def test_quoting():
    assert quote_ident('a"b') == '"a""b"'
    sql = render_init_sql("x'; DROP TABLE y; --", "UTC")
    assert "ALTER DATABASE \"x'; DROP TABLE y; --\" SET timezone TO 'UTC';" in sql


@pytest.mark.parametrize("db,tz", [("", "UTC"), ("a" * 64, "UTC"), ("ok", "Asia/Shanghai'; --"), ("ok", ""),
                                   ("ok", "../../etc/passwd x")])
def test_invalid(db, tz):
    with pytest.raises(ValueError):
        render_init_sql(db, tz)


def test_postgres_args():
    assert render_postgres_args()[:3] == ["postgres", "-c", "shared_preload_libraries=pg_stat_statements"]
    with pytest.raises(ValueError):
        render_postgres_args({"work_mem": "1; rm -rf /"})
