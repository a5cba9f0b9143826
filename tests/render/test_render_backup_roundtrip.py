"""backup.sh then restore.sh for real: PostgreSQL 15 and Redis 7 (appendonly yes) are real
servers; a small docker CLI stand-in (fake_docker.sh) maps `docker exec/cp/inspect/stop/start`
onto them and onto plain directories for MinIO, so the scripts run unmodified."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from render.backup import BackupSettings, render_backup_script, render_restore_script
from render.postgres import render_init_sql
from render.redis import RedisSettings, render_redis_command

from render_testlib import PG_BIN, free_port, need_tool

HERE = Path(__file__).parent
REPO = HERE.parents[1]
PASSWORD = "r3dis-secret"


@pytest.fixture
def world(tmp_path, cluster):
    for tool in ("redis-server", "redis-cli", "tar", "gzip", "sha256sum", "flock"):
        need_tool(tool)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shutil.copy(HERE / "fake_docker.sh", bindir / "docker")
    (bindir / "docker").chmod(0o755)
    root = tmp_path / "containers"
    for c in ("ai-meeting-redis", "ai-meeting-minio", "ai-meeting-postgres"):
        (root / c / "data").mkdir(parents=True)
    install = tmp_path / "install"
    (install / "nginx").mkdir(parents=True)
    (install / "nginx/nginx.conf").write_text("events {}\n")
    (install / "data").mkdir()
    (install / "data/huge.bin").write_text("not config")
    s = BackupSettings(install_dir=str(install), backup_dir=str(install / "backups"), retention_days=30,
                       app_containers=("ai-meeting-api-1", "ai-meeting-api-2"),
                       app_labels=("ai-meeting.service=api", "ai-meeting.stack=prod"))
    (install / "bin").mkdir()
    (install / "bin/backup.sh").write_text(render_backup_script(s))
    (install / "bin/restore.sh").write_text(render_restore_script(s))
    port = free_port()
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", FAKE_ROOT=str(root),
               FAKE_PG="ai-meeting-postgres", FAKE_PG_SOCK=cluster.sockdir, FAKE_PG_PORT=str(cluster.port),
               FAKE_PG_BIN=str(PG_BIN), FAKE_REDIS="ai-meeting-redis", FAKE_REDIS_PORT=str(port),
               FAKE_REDIS_PASSWORD=PASSWORD, FAKE_APPS="api-5f3a1c2 ai-meeting-api-2",
               # The rendered container command, so the AOF settings are the production ones.
               FAKE_REDIS_CMD=render_redis_command(
                   RedisSettings(maxmemory="64mb", data_dir=str(root / "ai-meeting-redis/data")))[2])
    cluster.psql("postgres", sql="DROP DATABASE IF EXISTS ai_meeting; DROP ROLE IF EXISTS ai_meeting;"
                                 "CREATE ROLE ai_meeting SUPERUSER LOGIN; CREATE DATABASE ai_meeting OWNER ai_meeting;")
    r = cluster.psql("ai_meeting", sql=render_init_sql("ai_meeting", "Asia/Shanghai"))
    subprocess.run(["docker", "start", "ai-meeting-redis"], env=env, check=True, capture_output=True)

    def redis(*args: str) -> str:
        return subprocess.run(["redis-cli", "--no-auth-warning", "-p", str(port), *args], check=True,
                              capture_output=True, text=True, env=dict(env, REDISCLI_AUTH=PASSWORD)).stdout.strip()

    try:
        yield s, env, root, install, redis
    finally:
        pidfile = root / "redis.pid"
        if pidfile.exists():
            pid = int(pidfile.read_text())
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
        cluster.psql("postgres", sql="DROP DATABASE IF EXISTS ai_meeting;", check=False)


def run(script: Path, env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=300)


def test_backup_then_restore_round_trip(world, cluster):
    s, env, root, install, redis = world
    db = lambda sql: cluster.psql("ai_meeting", "-c", sql).stdout.strip()  # noqa: E731
    db("CREATE TABLE meetings (id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), title text);"
       "INSERT INTO meetings (title) VALUES ('standup'), ('retro');")
    redis("set", "session:1", "alice")
    redis("set", "session:2", "bob")
    minio = root / "ai-meeting-minio/data"
    (minio / "ai-meeting-recordings").mkdir()
    (minio / "ai-meeting-recordings/rec1.webm").write_bytes(b"v1" * 1000)
    old = Path(s.backup_dir) / "20000101_000000"
    old.mkdir(parents=True)  # far beyond retention: pruned after a good run

    r = run(install / "bin/backup.sh", env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert run_failed_metric(install) == "0"
    dirs = [d for d in Path(s.backup_dir).iterdir() if d.name[:2] == "20" and d.name != old.name]
    assert len(dirs) == 1
    b = dirs[0]
    assert not old.exists(), "retention did not prune the old backup"
    assert stat.S_IMODE(b.stat().st_mode) == 0o700
    names = sorted(p.name for p in b.iterdir())
    assert names == ["MANIFEST.sha256", "backup-info.txt", "config.tar.gz", "minio-data.tar.gz",
                     "postgres.sql.gz", "redis-dump.rdb"]
    assert subprocess.run(["sha256sum", "-c", "--strict", "MANIFEST.sha256"], cwd=b, capture_output=True).returncode == 0
    config = subprocess.run(["tar", "-tzf", str(b / "config.tar.gz")], capture_output=True, text=True).stdout
    assert "./nginx/nginx.conf" in config and "huge.bin" not in config and "backups" not in config
    assert "backup complete" in Path(s.log_file).read_text()
    assert not list((root / "ai-meeting-redis/data").glob(".ai-meeting-backup*"))  # temp file removed

    # Life goes on after the backup...
    db("INSERT INTO meetings (title) VALUES ('after'); UPDATE meetings SET title = 'changed' WHERE title = 'retro';")
    redis("del", "session:1")
    redis("set", "session:3", "mallory")
    (minio / "ai-meeting-recordings/rec1.webm").write_bytes(b"overwritten")
    (minio / "ai-meeting-recordings/rec2.webm").write_bytes(b"new")

    r = run(install / "bin/restore.sh", env, b.name)  # no --yes: nothing happens
    assert r.returncode == 2
    assert db("SELECT count(*) FROM meetings") == "3"

    r = run(install / "bin/restore.sh", env, str(b), "--yes")
    assert r.returncode == 0, r.stdout + r.stderr

    assert db("SELECT string_agg(title, ',' ORDER BY title) FROM meetings") == "retro,standup"
    assert db("SELECT count(*) FROM pg_extension WHERE extname IN ('uuid-ossp', 'pg_stat_statements')") == "2"
    assert sorted(redis("keys", "*").split()) == ["session:1", "session:2"]
    assert redis("config", "get", "appendonly").split()[1] == "yes"
    assert (minio / "ai-meeting-recordings/rec1.webm").read_bytes() == b"v1" * 1000
    assert not (minio / "ai-meeting-recordings/rec2.webm").exists()
    events = (root / "events.log").read_text().split("\n")
    assert events.index("stop ai-meeting-api-1") < events.index("stop ai-meeting-redis")
    # Named and labelled API containers alike (each once) stopped first, started last.
    assert events.index("stop api-5f3a1c2") < events.index("stop ai-meeting-redis")
    assert events[-5:-1] == ["start ai-meeting-api-1", "start ai-meeting-api-2", "start api-5f3a1c2",
                             "exec ai-meeting-nginx nginx -s reload"], events  # re-resolves the replicas
    assert "docker ps --format {{.Names}} --filter label=ai-meeting.service=api --filter label=ai-meeting.stack=prod" \
        in (root / "calls.log").read_text()
    keep = list(Path(s.backup_dir).glob("pre-restore-*"))
    assert len(keep) == 1 and (keep[0] / "minio/ai-meeting-recordings/rec2.webm").exists()

    # Redis really persisted the restored data in its AOF: survives a restart with appendonly yes.
    subprocess.run(["docker", "stop", "ai-meeting-redis"], env=env, check=True, capture_output=True)
    subprocess.run(["docker", "start", "ai-meeting-redis"], env=env, check=True, capture_output=True)
    assert sorted(redis("keys", "*").split()) == ["session:1", "session:2"]
    redis("set", "session:4", "dave")
    subprocess.run(["docker", "stop", "ai-meeting-redis"], env=env, check=True, capture_output=True)
    subprocess.run(["docker", "start", "ai-meeting-redis"], env=env, check=True, capture_output=True)
    assert sorted(redis("keys", "*").split()) == ["session:1", "session:2", "session:4"]


def test_naive_redis_restore_loses_data(world):
    """Why restore.sh rebuilds the AOF: with appendonly yes, Redis 7 ignores a dump.rdb put in
    place of the old files and starts empty."""
    s, env, root, install, redis = world
    redis("set", "k", "v")
    snap = root / "snap.rdb"
    redis("--rdb", str(snap))
    subprocess.run(["docker", "stop", "ai-meeting-redis"], env=env, check=True, capture_output=True)
    data = root / "ai-meeting-redis/data"
    shutil.rmtree(data / "appendonlydir")
    shutil.copy(snap, data / "dump.rdb")
    subprocess.run(["docker", "start", "ai-meeting-redis"], env=env, check=True, capture_output=True)
    assert redis("dbsize") == "0"


def test_failed_backup_exits_nonzero_and_keeps_old_backups(world):
    s, env, root, install, redis = world
    old = Path(s.backup_dir) / "20000101_000000"
    old.mkdir(parents=True)
    env = dict(env, FAKE_PG="somewhere-else")  # pg_dump fails
    r = run(install / "bin/backup.sh", env)
    assert r.returncode == 1
    assert "ERROR: postgres backup failed" in r.stdout
    assert run_failed_metric(install) == "1", "a failed run must raise BackupFailed"
    assert old.exists()  # no pruning after a failed run
    failed = list(Path(s.backup_dir).glob("*.failed"))
    assert len(failed) == 1
    r = run(install / "bin/restore.sh", env, str(failed[0]), "--yes")
    assert r.returncode == 1 and "postgres part of this backup failed" in r.stderr
    assert "stop" not in (root / "events.log").read_text()  # refused before touching anything


def run_failed_metric(install: Path) -> str:
    """What backup.sh's exit trap left for the node exporter: the value of the run metric."""
    prom = install / "metrics/ai_meeting_backup_run.prom"
    assert stat.S_IMODE(prom.stat().st_mode) == 0o644, "the node exporter (nobody) cannot read it"
    return next(l.split()[-1] for l in prom.read_text().splitlines() if l.startswith("ai_meeting_backup_last_run_failed "))


# ---- the restore drill against a real PostgreSQL (the local image) -----------------------------

@pytest.mark.docker
def test_restore_drill_restores_the_newest_backup_into_a_throwaway_postgres(tmp_path):
    """restore-drill.sh as rendered: the newest backup's dump restored into a throwaway container
    of the running PostgreSQL's image and every table's rows counted against the dump; then a
    changed byte and a dump that does not restore each fail it, and the metric says so while
    keeping the time of the last good drill."""
    import gzip
    import hashlib
    import re
    import uuid

    from render.backup import render_restore_drill_script
    from tests.support import require_engine, require_local_images

    require_engine()
    require_local_images()
    image = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())["config"]["ai-meeting:images"]["postgres"]
    running = f"aim-drill-test-pg-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "run", "-d", "--name", running, "--network", "none", "-e", "POSTGRES_USER=ai_meeting",
                    "-e", "POSTGRES_DB=ai_meeting", "-e", "POSTGRES_PASSWORD=x", image], check=True, capture_output=True)
    drills_left = lambda: subprocess.run(  # noqa: E731
        ["docker", "ps", "-aq", "-f", "label=ai-meeting.kind=drill"], capture_output=True, text=True).stdout.split()
    try:
        def psql(sql: str) -> str:
            for _ in range(120):
                r = subprocess.run(["docker", "exec", running, "psql", "-h", "127.0.0.1", "-tA", "-v", "ON_ERROR_STOP=1",
                                    "-U", "ai_meeting", "-d", "ai_meeting", "-c", sql], capture_output=True, text=True)
                if r.returncode == 0 or "does not exist" in r.stderr or "syntax" in r.stderr:
                    return r.stdout
                time.sleep(1)
            raise AssertionError(r.stderr)

        psql("CREATE TABLE meetings (id serial PRIMARY KEY, title text); CREATE TABLE \"Notes\" (body text);"
             "INSERT INTO meetings (title) SELECT 'm' || g FROM generate_series(1, 40) g;"
             "INSERT INTO \"Notes\" VALUES ('a'), (E'tab\\there'), ('multi\nline');")
        backups, install = tmp_path / "backups", tmp_path / "install"
        good = backups / "20261206_020000"
        good.mkdir(parents=True)
        dump = subprocess.run(["docker", "exec", running, "pg_dump", "--clean", "--if-exists", "-U", "ai_meeting", "ai_meeting"],
                              capture_output=True, check=True).stdout
        (good / "postgres.sql.gz").write_bytes(gzip.compress(dump))

        def manifest(d: Path) -> None:
            lines = [f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}\n" for f in sorted(d.iterdir()) if f.name != "MANIFEST.sha256"]
            (d / "MANIFEST.sha256").write_text("".join(lines))

        manifest(good)
        older = backups / "20261130_020000"  # not the newest: the drill takes the newest
        older.mkdir()
        s = BackupSettings(install_dir=str(install), backup_dir=str(backups), postgres_container=running)
        drill = tmp_path / "restore-drill.sh"
        drill.write_text(render_restore_drill_script(s))
        prom = install / "metrics/ai_meeting_restore_drill.prom"

        def metric(name: str) -> str | None:
            m = re.search(rf"^{name} (\S+)$", prom.read_text(), re.M)
            return m.group(1) if m else None

        ok = subprocess.run(["bash", str(drill)], capture_output=True, text=True, timeout=300)
        assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-2000:]
        assert "20261206_020000" in ok.stdout and "2 tables, 43 rows" in ok.stdout, ok.stdout
        assert metric("ai_meeting_restore_drill_last_run_failed") == "0"
        good_at = metric("ai_meeting_restore_drill_last_success_timestamp_seconds")
        assert good_at and abs(float(good_at) - time.time()) < 300
        assert oct(prom.stat().st_mode & 0o777) == "0o644"
        assert drills_left() == [], "the throwaway container was left behind"

        # One changed byte: refused by the manifest, the failure recorded, the good time kept.
        data = bytearray((good / "postgres.sql.gz").read_bytes())
        data[len(data) // 2] ^= 1
        (good / "postgres.sql.gz").write_bytes(bytes(data))
        bad = subprocess.run(["bash", str(drill)], capture_output=True, text=True, timeout=300)
        assert bad.returncode == 1 and "checksum mismatch" in bad.stdout, bad.stdout
        assert metric("ai_meeting_restore_drill_last_run_failed") == "1"
        assert metric("ai_meeting_restore_drill_last_success_timestamp_seconds") == good_at

        # A whole, checksummed dump that does not restore (a row the table refuses).
        broken = dump.replace(b"FROM stdin;\n", b"FROM stdin;\nnot-a-number\tx\tthird\n", 1)
        assert broken != dump
        (good / "postgres.sql.gz").write_bytes(gzip.compress(broken))
        manifest(good)
        refused = subprocess.run(["bash", str(drill)], capture_output=True, text=True, timeout=300)
        assert refused.returncode == 1 and "does not restore" in refused.stdout, refused.stdout[-2000:]
        assert drills_left() == []
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", running], capture_output=True)


# ---- off-site copies against a real S3 (MinIO) and the real age ---------------------------------

@pytest.mark.docker
def test_offsite_copy_round_trip_through_a_real_s3_with_age(tmp_path):
    """offsite-backup.sh as rendered: a complete backup encrypted to the stack's recipient and
    uploaded to a second MinIO (the bucket made on the way); the server's backups then lost;
    offsite-restore.sh latest with the identity on stdin brings the same files back (manifest
    checked); another stack's identity cannot decrypt it."""
    import hashlib
    import uuid

    from components.offsite import age_identity, age_recipient, mc_config
    from render.backup import OffsiteSettings, render_offsite_backup_script, render_offsite_restore_script
    from tests.support import require_engine, require_local_images

    need_tool("age")
    require_engine()
    require_local_images()
    image = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())["config"]["ai-meeting:images"]["minio"]
    port = free_port()
    s3 = f"aim-offsite-s3-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "run", "-d", "--name", s3, "-p", f"127.0.0.1:{port}:9000", "-e", "MINIO_ROOT_USER=offsite",
                    "-e", "MINIO_ROOT_PASSWORD=offsite-secret/+x", image, "server", "/data"], check=True, capture_output=True)
    try:
        install, backups = tmp_path / "install", tmp_path / "backups"
        s = BackupSettings(install_dir=str(install), backup_dir=str(backups), minio_container=s3,
                           offsite=OffsiteSettings(endpoint=f"http://127.0.0.1:{port}", bucket="aim-offsite", prefix="prod/"))
        identity = age_identity("the stack's seed")
        (install / "etc").mkdir(parents=True)
        (install / "etc/offsite-recipient").write_text(age_recipient(identity) + "\n")
        (install / "etc/offsite-mc.json").write_text(mc_config(s.offsite.endpoint, "offsite", "offsite-secret/+x") + "\n")
        (install / "bin").mkdir()
        (install / "bin/offsite-backup.sh").write_text(render_offsite_backup_script(s))
        (install / "bin/offsite-restore.sh").write_text(render_offsite_restore_script(s))
        stamp = "20261206_020000"
        src = backups / stamp
        src.mkdir(parents=True)
        (src / "postgres.sql.gz").write_bytes(os.urandom(4096))
        (src / "redis-dump.rdb").write_bytes(b"REDIS0011" + os.urandom(100))
        (src / "MANIFEST.sha256").write_text("".join(
            f"{hashlib.sha256((src / n).read_bytes()).hexdigest()}  {n}\n" for n in ("postgres.sql.gz", "redis-dump.rdb")))
        before = {p.name: p.read_bytes() for p in src.iterdir()}

        for _ in range(60):  # MinIO answering
            if subprocess.run(["docker", "exec", s3, "mc", "ready", "local"], capture_output=True).returncode == 0:
                break
            time.sleep(1)
        up = subprocess.run(["bash", str(install / "bin/offsite-backup.sh"), str(src)], capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-2000:]
        assert "encrypted" in up.stdout
        listed = subprocess.run(["docker", "exec", s3, "sh", "-c", "mc alias set x http://127.0.0.1:9000 offsite "
                                 "'offsite-secret/+x' >/dev/null && mc ls x/aim-offsite/prod/"], capture_output=True, text=True).stdout
        assert f"{stamp}.tar.age" in listed and f"{stamp}.tar.age.sha256" in listed, listed
        assert "ai_meeting_backup_offsite_last_success_timestamp_seconds" in (install / "metrics/ai_meeting_backup_offsite.prom").read_text()

        shutil.rmtree(backups)  # the server's own copies are gone
        wrong = subprocess.run(["bash", str(install / "bin/offsite-restore.sh"), "latest", "--identity", "-"],
                               input=age_identity("another stack") + "\n", capture_output=True, text=True, timeout=300)
        assert wrong.returncode != 0 and "could not decrypt" in wrong.stdout + wrong.stderr
        back = subprocess.run(["bash", str(install / "bin/offsite-restore.sh"), "latest", "--identity", "-"],
                              input=identity + "\n", capture_output=True, text=True, timeout=300)
        assert back.returncode == 0, back.stdout[-3000:] + back.stderr[-2000:]
        assert {p.name: p.read_bytes() for p in (backups / stamp).iterdir()} == before
        assert f"restore.sh {stamp} --yes" in back.stdout
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", s3], capture_output=True)
