"""A PostgreSQL major upgrade through the real engine, 15 -> 17 with local images (Debian 12's
15, Debian 13's 17), on a dev stack of its own (README: PostgreSQL major upgrade):

- changing images.postgres to 17 is refused by the preview, naming the key and what to do; so
  is a downgrade afterwards;
- with database.upgrade: dump-restore one `up` dumps, moves the old data directory aside and
  restores into 17: every table equal by row count and by a sha256 of its rows (computed here,
  from `COPY ... TO STDOUT`, independently of the script's own check), the roles there, the API
  serving from the restored database, the old data directory kept in the volume;
- then the stack has converged, and the runbook's clean-up removes the old directory.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import time

import pytest

from tests.e2e import netcheck
from tests.e2e.engine import PulumiProject, require_engine, require_local_images
from tests.support.docker import docker

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

STACK = "d2-pgupgrade"
PREFIX = "aim-pgu"
HTTP, HTTPS = 18411, 18412
LOOPBACK = {"postgres": 18413, "redis": 18414, "minio": 18415, "minio_console": 18416, "api": 18417}
OVERRIDES = {
    "name_prefix": PREFIX,
    "nginx": {"bind_address": "127.0.0.1", "http_port": HTTP, "https_port": HTTPS},
    "loopback_ports": LOOPBACK,
    "api": {"replicas": 2, "migrate_command": ["ai-meeting-api", "migrate"], "start_timeout": 60},
    "monitoring": {"enabled": False},
}
PG15, PG17 = "ai-meeting-local/postgres:15", "ai-meeting-local/postgres:17"
POSTGRES = f"{PREFIX}-postgres"
VOLUME = f"{PREFIX}-postgres-data"

SEED = """
INSERT INTO meetings (title) SELECT 'meeting ' || g FROM generate_series(1, 20000) g;  -- the API's table
CREATE TABLE notes (id bigserial PRIMARY KEY, meeting uuid, body text, created_at timestamptz NOT NULL);
INSERT INTO notes (meeting, body, created_at)
  SELECT uuid_generate_v4(), repeat('note ' || g || ' ', g % 40), timestamptz '2026-01-01 00:00+00' + g * interval '1 minute'
  FROM generate_series(1, 8000) g;
CREATE SCHEMA recordings;
CREATE TABLE recordings.parts (n bigserial PRIMARY KEY, meeting int, size_bytes bigint, meta jsonb, score float8, tags text[]);
INSERT INTO recordings.parts (meeting, size_bytes, meta, score, tags)
  SELECT g % 97, g::bigint * 1048573, jsonb_build_object('codec', 'opus', 'n', g), g / 7.0, ARRAY['a', 'b' || g]
  FROM generate_series(1, 5000) g;
CREATE ROLE reporting LOGIN PASSWORD 'reporting-pw';
GRANT USAGE ON SCHEMA recordings TO reporting;
GRANT SELECT ON recordings.parts TO reporting;
"""


def psql(sql: str) -> str:
    r = docker("exec", "-i", POSTGRES, "psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-U", "ai_meeting", "-d", "ai_meeting",
               input=sql, check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def tables_by_checksum() -> dict[str, tuple[int, str]]:
    """Every user table: (rows, sha256 of its rows as COPY writes them, sorted)."""
    names = psql("SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                 "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1").split()
    out = {}
    for name in names:
        rows = docker("exec", POSTGRES, "psql", "-X", "-U", "ai_meeting", "-d", "ai_meeting", "-c",
                      f"COPY (SELECT * FROM {name}) TO STDOUT").stdout.splitlines()
        out[name] = (len(rows), hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest())
    return out


def in_volume(*cmd: str) -> subprocess.CompletedProcess:
    return docker("run", "--rm", "--network", "none", "-v", f"{VOLUME}:/vol", "--entrypoint", cmd[0], PG17, *cmd[1:], check=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    env = require_engine()
    require_local_images()
    require_local_images("postgres17")
    p = PulumiProject(tmp_path_factory.mktemp("d2-pgupgrade"), STACK, env, stack_file="Pulumi.dev.yaml")
    p.configure(**OVERRIDES)
    p.config_set("images.postgres", PG15)
    p.up()
    yield p
    p.run("destroy", "--yes", "--stack", STACK, "--skip-preview", check=False, timeout=900)


def test_a_major_upgrade_is_refused_unless_asked_then_moves_every_row(project, record):
    p = project
    assert p.outputs()["postgres"] == {"image": PG15, "major": 15}
    psql(SEED)
    before = tables_by_checksum()
    assert before["public.meetings"][0] == 20000 and before["recordings.parts"][0] == 5000, before
    assert before["public.notes"][0] == 8000, before
    assert "public.schema_migrations" in before  # the API's own migrations

    # Refused: the preview names the key and the way out; nothing changes.
    p.config_set("images.postgres", PG17)
    refused = p.preview(check=False)
    text = refused.stdout + refused.stderr
    assert refused.code != 0 and "ai-meeting:images.postgres" in text and "database.upgrade" in text, text[-3000:]
    assert "Traceback" not in text
    assert psql("SHOW server_version").startswith("15.")

    # Asked for: one `up`.
    p.config_set("database.upgrade", "dump-restore")
    started = time.monotonic()
    p.up()
    upgrade_seconds = time.monotonic() - started
    assert psql("SHOW server_version").startswith("17."), psql("SELECT version()")
    after = tables_by_checksum()
    assert after == before, {k: (before.get(k), after.get(k)) for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert psql("SELECT rolname FROM pg_roles WHERE rolname = 'reporting'") == "reporting"
    assert in_volume("ls", "/vol/upgrade-15-to-17").stdout.split() == ["after.tsv", "before.tsv", "db.dump", "from",
                                                                      "restored", "roles.sql"]

    # The API serves from the restored database, through nginx.
    status, _, body = netcheck.https_get(HTTPS, "/api/health/deps")
    assert status == 200 and json.loads(body)["checks"]["postgres"] == "ok", body
    status, _, body = netcheck.https_get(HTTPS, "/api/migrations")
    assert status == 200 and json.loads(body)["migrations"] == ["001_create_meetings"], body

    # The old data directory is kept until the operator removes it.
    kept = in_volume("cat", "/vol/pgdata-15/PG_VERSION")
    assert kept.stdout.strip() == "15", kept.stderr
    assert p.outputs()["postgres"] == {"image": PG17, "major": 17}
    converged = p.preview("--expect-no-changes", "--diff", check=False)
    assert converged.code == 0, converged.stdout[-5000:]

    # A downgrade is refused whatever database.upgrade says.
    p.config_set("images.postgres", PG15)
    downgrade = p.preview(check=False)
    assert downgrade.code != 0 and "downgrade" in downgrade.stdout + downgrade.stderr, downgrade.stdout[-3000:]
    p.config_set("images.postgres", PG17)

    # The runbook's last steps: database.upgrade back to refuse, the old directory removed.
    p.config_set("database.upgrade", "refuse")
    p.up()
    removed = docker("run", "--rm", "--network", "none", "-v", f"{VOLUME}:/vol", "--entrypoint", "rm", PG17,
                     "-rf", "/vol/pgdata-15", "/vol/upgrade-15-to-17", check=False)
    assert removed.returncode == 0, removed.stderr
    assert in_volume("ls", "/vol").stdout.split() == ["pgdata"]
    assert tables_by_checksum() == before
    final = p.preview("--expect-no-changes", "--diff", check=False)
    assert final.code == 0, final.stdout[-5000:]
    rows = sum(n for n, _ in before.values())
    record(f"dev: PostgreSQL 15 -> 17 by one `up` (database.upgrade: dump-restore; {len(before)} tables, {rows} rows)",
           f"{upgrade_seconds:.0f} s; every table equal by rows and sha256", "every table equal", after == before)
