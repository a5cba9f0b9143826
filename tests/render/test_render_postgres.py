"""render_init_sql on a real PostgreSQL 15 server (temp cluster, unix socket only)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from render.postgres import quote_ident, render_init_sql, render_postgres_args

from conftest import PG_BIN, free_port, missing, need_root, need_tool, stop_process, wait_port


class Cluster:
    def __init__(self, sockdir: str, port: int):
        self.sockdir, self.port = sockdir, port

    def psql(self, db: str, *args: str, sql: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(PG_BIN / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "--no-password",
               "-h", self.sockdir, "-p", str(self.port), "-U", "postgres", "-d", db, *args]
        return subprocess.run(cmd, input=sql, capture_output=True, text=True, check=check, timeout=60)


@pytest.fixture(scope="module")
def cluster():
    if not (PG_BIN / "initdb").exists():
        missing(f"PostgreSQL 15 server binaries not found in {PG_BIN}")
    need_root()
    need_tool("runuser")
    base = Path(tempfile.mkdtemp(prefix="ai-meeting-pg-", dir="/tmp"))
    os.chmod(base, 0o755)
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    shutil.chown(sock, "postgres", "postgres")
    subprocess.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", str(data)], check=True)
    subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                    "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"], check=True, capture_output=True)
    port = free_port()
    # The same server flags the postgres component uses (pg_stat_statements preloaded);
    # listen_addresses='' keeps it on its unix socket only.
    server_args = render_postgres_args()[1:]
    proc = subprocess.Popen(["runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"), "-D", str(data),
                             "-k", str(sock), "-p", str(port), "-c", "listen_addresses=", *server_args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    c = Cluster(str(sock), port)
    try:
        import time
        deadline = time.monotonic() + 60
        while c.psql("postgres", "-c", "select 1", check=False).returncode != 0:
            assert proc.poll() is None, "postgres exited at start"
            assert time.monotonic() < deadline, "postgres did not accept connections in 60 s"
            time.sleep(0.2)
        yield c
    finally:
        # runuser forwards SIGTERM to postgres: smart shutdown; SIGINT would be fast.
        stop_process(proc, sig=2, timeout=30)
        shutil.rmtree(base, ignore_errors=True)


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
