"""Contract tests of the stand-in images built by scripts/build-local-images.

Each image is run for real on a throw-away user network and checked against what the Pulumi
program expects from the official image it replaces. Run:

    scripts/start-dockerd && scripts/build-local-images
    .venv/bin/pytest -m docker tests/images -v
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from images_support import docker, wait_for

pytestmark = pytest.mark.docker

FIXTURES = Path(__file__).parent / "fixtures"
DB = {"POSTGRES_DB": "ai_meeting", "POSTGRES_USER": "ai_meeting", "POSTGRES_PASSWORD": "s3cret-Pg!"}
REDIS_PASSWORD = "s3cret-redis"
MINIO_USER, MINIO_PASSWORD, BUCKET = "ai-meeting-admin", "s3cret-minio-pass", "ai-meeting-recordings"


# --- helpers ------------------------------------------------------------------------------------
def http_get(url: str, timeout: float = 5, insecure_tls: bool = False):
    """GET without following redirects; returns (status, headers, body text)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    handlers: list = [NoRedirect()]
    if insecure_tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(url, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def ws_echo(url: str, messages: list[str], insecure_tls: bool = False) -> list[str]:
    import websockets

    async def run():
        kwargs = {}
        if url.startswith("wss://"):
            ctx = ssl.create_default_context()
            if insecure_tls:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            kwargs["ssl"] = ctx
        async with websockets.connect(url, open_timeout=10, **kwargs) as ws:
            replies = []
            for message in messages:
                await ws.send(message)
                replies.append(await asyncio.wait_for(ws.recv(), 10))
            return replies

    return asyncio.run(run())


def start_postgres(sandbox, images, *, volume, env=DB, initdir=None, name="postgres"):
    mounts = [f"{volume}:/var/lib/postgresql/data"]
    if initdir:
        mounts.append(f"{initdir}:/docker-entrypoint-initdb.d:ro")
    cname = sandbox.run(
        images["postgres"], "postgres", "-c", "shared_preload_libraries=pg_stat_statements",
        name=name, alias="postgres", mounts=mounts,
        env={**env, "PGDATA": "/var/lib/postgresql/data/pgdata"},  # as the plan sets it
    )
    # TCP only answers once init is over (the init server listens on the Unix socket only).
    wait_for(lambda: docker("exec", cname, "pg_isready", "-h", "127.0.0.1", "-U", env["POSTGRES_USER"],
                            check=False).returncode == 0,
             timeout=90, what=f"postgres ready\n{sandbox.logs(cname)}")
    return cname


def psql(sandbox, images, sql: str, password: str = DB["POSTGRES_PASSWORD"], check=True):
    return sandbox.oneshot(
        images["postgres"], "psql", "-h", "postgres", "-U", DB["POSTGRES_USER"], "-d", DB["POSTGRES_DB"],
        "-v", "ON_ERROR_STOP=1", "-tAc", sql, env={"PGPASSWORD": password}, check=check,
    )


def start_redis(sandbox, images):
    cname = sandbox.run(
        images["redis"], "redis-server", "--requirepass", REDIS_PASSWORD, "--appendonly", "yes",
        "--maxmemory", "2gb", "--maxmemory-policy", "allkeys-lru", name="redis",
    )
    wait_for(lambda: "PONG" in docker("exec", cname, "redis-cli", "-a", REDIS_PASSWORD,
                                      "--no-auth-warning", "ping", check=False).stdout,
             timeout=30, what="redis ready")
    return cname


def start_minio(sandbox, images, volume, name="minio"):
    cname = sandbox.run(
        images["minio"], "server", "/data", "--console-address", ":9001", name=name, alias="minio",
        env={"MINIO_ROOT_USER": MINIO_USER, "MINIO_ROOT_PASSWORD": MINIO_PASSWORD},
        mounts=[f"{volume}:/data"],
    )
    wait_for(lambda: docker("exec", cname, "curl", "-fsS", "http://localhost:9000/minio/health/live",
                            check=False).returncode == 0,
             timeout=60, what=f"minio live\n{sandbox.logs(cname)}")
    return cname


def mc_script(sandbox, images, script: str, password: str = MINIO_PASSWORD, check=True):
    return sandbox.oneshot(
        images["mc"], "sh", "-c",
        f'mc alias set store http://minio:9000 "$U" "$P" >/dev/null && {script}',
        env={"U": MINIO_USER, "P": password}, check=check,
    )


# --- postgres -----------------------------------------------------------------------------------
def test_postgres_contract(sandbox, local_images, tmp_path):
    images = local_images
    initdir = tmp_path / "initdb"
    initdir.mkdir()
    (initdir / "01-init.sql").write_text(
        (FIXTURES / "plan-init-db.sql").read_text()
        + "\nCREATE TABLE init_marker (id serial PRIMARY KEY, at timestamptz DEFAULT now());"
        + "\nINSERT INTO init_marker DEFAULT VALUES;\n"
    )
    (initdir / "02-init.sh").write_text(
        '#!/bin/bash\nset -e\npsql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" '
        '-c "CREATE TABLE init_sh_marker (ok boolean)"\n'
    )
    initdir.chmod(0o755)
    for f in initdir.iterdir():
        f.chmod(0o755)
    volume = sandbox.volume("pgdata")

    pg = start_postgres(sandbox, images, volume=volume, initdir=initdir)

    # Created the user and database, with the password, reachable over TCP from another container.
    assert psql(sandbox, images, "SELECT current_user || '/' || current_database()").stdout.strip() \
        == "ai_meeting/ai_meeting"
    bad = psql(sandbox, images, "SELECT 1", password="wrong-password", check=False)
    assert bad.returncode != 0 and "password authentication failed" in bad.stderr
    # Password auth is SCRAM.
    assert psql(sandbox, images, "SHOW password_encryption").stdout.strip() == "scram-sha-256"
    assert "host all all all scram-sha-256" in docker(
        "exec", pg, "cat", "/var/lib/postgresql/data/pgdata/pg_hba.conf").stdout

    # Init files ran (the plan's init SQL, a .sql and a .sh); uuid-ossp is there and usable.
    assert psql(sandbox, images, "SELECT count(*) FROM init_marker").stdout.strip() == "1"
    assert psql(sandbox, images, "SELECT count(*) FROM init_sh_marker").stdout.strip() == "0"
    assert psql(sandbox, images, "SELECT extname FROM pg_extension WHERE extname = 'uuid-ossp'"
                ).stdout.strip() == "uuid-ossp"
    assert len(psql(sandbox, images, "SELECT uuid_generate_v4()").stdout.strip()) == 36
    # CMD args reach postgres; contrib extensions are installed.
    assert psql(sandbox, images, "SHOW shared_preload_libraries").stdout.strip() == "pg_stat_statements"
    psql(sandbox, images, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; "
                          "SELECT count(*) FROM pg_stat_statements")
    # Listens on all addresses, runs as postgres, client tools in PATH.
    assert psql(sandbox, images, "SHOW listen_addresses").stdout.strip() == "*"
    assert "Uid:\t999\t" in docker("exec", pg, "cat", "/proc/1/status").stdout
    assert docker("exec", pg, "id", "-un").returncode == 0
    for tool in ("pg_isready", "psql", "pg_dump"):
        docker("exec", pg, "sh", "-c", f"command -v {tool}")
    dump = docker("exec", pg, "pg_dump", "-U", DB["POSTGRES_USER"], DB["POSTGRES_DB"]).stdout
    assert "CREATE TABLE public.init_marker" in dump
    assert docker("exec", pg, "pg_isready", "-U", DB["POSTGRES_USER"]).returncode == 0  # plan's healthcheck

    psql(sandbox, images, "INSERT INTO init_marker DEFAULT VALUES")

    # Clean, fast stop.
    start = time.monotonic()
    docker("stop", "-t", "30", pg)
    assert time.monotonic() - start < 15
    assert "database system is shut down" in sandbox.logs(pg)
    assert docker("inspect", "-f", "{{.State.ExitCode}}", pg).stdout.strip() == "0"
    sandbox.remove(pg)

    # Replacement container on the same volume: no re-init (even with another password set),
    # data kept, the original password still the one that works.
    pg2 = start_postgres(sandbox, images, volume=volume, initdir=initdir, name="postgres2",
                         env={**DB, "POSTGRES_PASSWORD": "another-password"})
    assert "Skipping initialization" in sandbox.logs(pg2)
    assert psql(sandbox, images, "SELECT count(*) FROM init_marker").stdout.strip() == "2"
    assert psql(sandbox, images, "SELECT 1", password="another-password", check=False).returncode != 0


def test_postgres_requires_password(sandbox, local_images):
    cname = sandbox.run(local_images["postgres"], name="nopw")
    wait_for(lambda: docker("inspect", "-f", "{{.State.Running}}", cname).stdout.strip() == "false",
             timeout=30, what="postgres without password to exit")
    assert "superuser password is not specified" in sandbox.logs(cname)


# --- redis --------------------------------------------------------------------------------------
def test_redis_contract(sandbox, local_images):
    images = local_images
    rd = start_redis(sandbox, images)

    def cli(*args, password=None):
        auth = ["-a", password, "--no-auth-warning"] if password else []
        return sandbox.oneshot(images["redis"], "redis-cli", "-h", "redis", *auth, *args, check=False)

    assert "NOAUTH" in cli("ping").stdout
    wrong = cli("ping", password="wrong")
    assert "WRONGPASS" in wrong.stderr and "PONG" not in wrong.stdout
    assert cli("ping", password=REDIS_PASSWORD).stdout.strip() == "PONG"
    assert cli("set", "k", "v", password=REDIS_PASSWORD).stdout.strip() == "OK"
    assert cli("config", "get", "maxmemory", password=REDIS_PASSWORD).stdout.split()[-1] == "2147483648"
    assert cli("config", "get", "appendonly", password=REDIS_PASSWORD).stdout.split()[-1] == "yes"
    assert cli("config", "get", "dir", password=REDIS_PASSWORD).stdout.split()[-1] == "/data"
    assert "appendonlydir" in docker("exec", rd, "ls", "/data").stdout
    assert "Uid:\t999\t" in docker("exec", rd, "cat", "/proc/1/status").stdout
    # The plan's healthcheck command runs (redis-cli present in the image).
    assert docker("exec", rd, "redis-cli", "--raw", "incr", "ping", check=False).returncode == 0
    docker("exec", rd, "curl", "--version")


# --- minio + mc ---------------------------------------------------------------------------------
def test_minio_and_mc_contract(sandbox, with_minio):
    images = with_minio
    mn = start_minio(sandbox, images, sandbox.volume("minio"))
    ip = sandbox.ip(mn)
    assert http_get(f"http://{ip}:9000/minio/health/live")[0] == 200
    wait_for(lambda: http_get(f"http://{ip}:9001/")[0] == 200, timeout=30, what="minio console")

    out = mc_script(
        sandbox, images,
        f"mc mb --ignore-existing store/{BUCKET} && mc mb --ignore-existing store/{BUCKET} && "
        f"echo hello-object > /tmp/obj && mc cp /tmp/obj store/{BUCKET}/dir/obj.txt && "
        f"mc cat store/{BUCKET}/dir/obj.txt",
    )
    assert "hello-object" in out.stdout

    # Wrong credentials: refused.
    bad = mc_script(sandbox, images, f"mc ls store/{BUCKET}", password="wrong-password", check=False)
    assert bad.returncode != 0
    # Like the official image, the server image carries mc (for in-container checks and jobs).
    docker("exec", mn, "mc", "ready", "local", timeout=60)
    # Anonymous requests are refused too.
    assert http_get(f"http://{ip}:9000/{BUCKET}/dir/obj.txt")[0] == 403

    # The mc image also works as the official one does (arguments are mc subcommands).
    assert "mc version" in sandbox.oneshot(images["mc"], "--version").stdout
    env = {"MC_HOST_store": f"http://{MINIO_USER}:{MINIO_PASSWORD}@minio:9000"}
    assert BUCKET in sandbox.oneshot(images["mc"], "ls", "store", env=env).stdout

    # Data survives a container replacement on the same volume.
    volume = docker("inspect", "-f", "{{range .Mounts}}{{.Name}}{{end}}", mn).stdout.strip()
    docker("stop", mn)
    sandbox.remove(mn)
    start_minio(sandbox, images, volume, name="minio2")
    assert "hello-object" in mc_script(sandbox, images, f"mc cat store/{BUCKET}/dir/obj.txt").stdout


# --- api ----------------------------------------------------------------------------------------
def test_api_contract(sandbox, with_minio):
    images = with_minio
    start_postgres(sandbox, images, volume=sandbox.volume("pgdata"))
    start_redis(sandbox, images)
    start_minio(sandbox, images, sandbox.volume("minio"))
    env = {  # the plan's .env, as the Pulumi program passes it
        "NODE_ENV": "production", "APP_PORT": "3000",
        "DATABASE_URL": f"postgresql://ai_meeting:{DB['POSTGRES_PASSWORD']}@postgres:5432/ai_meeting",
        "DB_HOST": "postgres", "DB_PORT": "5432", "DB_NAME": "ai_meeting", "DB_USER": "ai_meeting",
        "DB_PASSWORD": DB["POSTGRES_PASSWORD"],
        "REDIS_URL": f"redis://:{REDIS_PASSWORD}@redis:6379", "REDIS_HOST": "redis",
        "REDIS_PORT": "6379", "REDIS_PASSWORD": REDIS_PASSWORD,
        "MINIO_ROOT_USER": MINIO_USER, "MINIO_ROOT_PASSWORD": MINIO_PASSWORD,
        "MINIO_ENDPOINT": "minio:9000", "MINIO_BUCKET": BUCKET,
        "LOG_LEVEL": "info", "LOG_FORMAT": "json",
    }

    # Migrations: apply, then a second run is a no-op; db-check works.
    first = sandbox.oneshot(images["api1"], "ai-meeting-api", "migrate", env=env)
    assert "applied migrations: 001_create_meetings" in first.stdout
    second = sandbox.oneshot(images["api1"], "ai-meeting-api", "migrate", env=env)
    assert "up to date" in second.stdout
    sandbox.oneshot(images["api1"], "ai-meeting-api", "db-check", env=env)
    bad_env = {**env, "DATABASE_URL": env["DATABASE_URL"].replace(DB["POSTGRES_PASSWORD"], "nope"),
               "MIGRATE_TIMEOUT": "3"}
    assert sandbox.oneshot(images["api1"], "ai-meeting-api", "migrate", env=bad_env,
                           check=False).returncode != 0
    assert psql(sandbox, images, "SELECT version FROM schema_migrations").stdout.split() == [
        "001_create_meetings"]
    psql(sandbox, images, "INSERT INTO meetings (title) VALUES ('standup')")

    api = sandbox.run(images["api2"], name="api", env=env)
    ip = sandbox.ip(api)
    wait_for(lambda: http_get(f"http://{ip}:3000/health")[0] == 200, timeout=30,
             what=f"api health\n{sandbox.logs(api)}")
    status, _, body = http_get(f"http://{ip}:3000/health")
    health = json.loads(body)
    hostname = docker("exec", api, "hostname").stdout.strip()
    assert health == {"status": "ok", "version": "demo-2", "instance": hostname}
    assert http_get(f"http://{ip}:3000/whoami")[2].strip() == hostname
    assert json.loads(http_get(f"http://{ip}:3000/migrations")[2])["migrations"] == ["001_create_meetings"]

    # Dependencies: the bucket does not exist yet -> 503; create it -> 200.
    status, _, body = http_get(f"http://{ip}:3000/health/deps")
    assert status == 503 and json.loads(body)["checks"]["postgres"] == "ok", body
    mc_script(sandbox, images, f"mc mb --ignore-existing store/{BUCKET}")
    status, _, body = http_get(f"http://{ip}:3000/health/deps")
    assert status == 200, body
    assert json.loads(body)["checks"] == {"postgres": "ok", "redis": "ok", "minio": "ok"}

    # Websocket echo under /ws/.
    assert ws_echo(f"ws://{ip}:3000/ws/", ["hello", "second"]) == ["hello", "second"]

    # Non-root, logs to stdout and /app/logs/app.log, curl for the healthcheck.
    assert docker("exec", api, "id", "-u").stdout.strip() != "0"
    assert "/health/deps" in docker("exec", api, "cat", "/app/logs/app.log").stdout
    assert "listening on 0.0.0.0:3000" in sandbox.logs(api)
    docker("exec", api, "curl", "-f", "http://localhost:3000/health")

    # APP_PORT is honoured; the image for demo-1 reports its own version.
    alt = sandbox.run(images["api1"], name="api-alt", env={**env, "APP_PORT": "3100"})
    alt_ip = sandbox.ip(alt)
    wait_for(lambda: http_get(f"http://{alt_ip}:3100/health")[0] == 200, timeout=30, what="api on 3100")
    assert json.loads(http_get(f"http://{alt_ip}:3100/health")[2])["version"] == "demo-1"


# --- web + nginx --------------------------------------------------------------------------------
# How the stack runs web (README: Hardening): non-root, no capability, read-only root with a
# tmpfs /tmp, port 80 allowed to a non-root user in its own network namespace.
WEB_HARDENED = ("--cap-drop", "ALL", "--security-opt", "no-new-privileges:true", "--read-only", "--tmpfs", "/tmp",
                "--sysctl", "net.ipv4.ip_unprivileged_port_start=0")


def test_web_serves_page(sandbox, local_images):
    web = sandbox.run(local_images["web"], name="web", extra=WEB_HARDENED)
    ip = sandbox.ip(web)
    wait_for(lambda: http_get(f"http://{ip}/")[0] == 200, timeout=20, what=f"web\n{sandbox.logs(web)}")
    status, headers, body = http_get(f"http://{ip}/")
    assert status == 200 and "AI Meeting" in body and headers["Content-Type"].startswith("text/html")
    docker("exec", web, "curl", "-fsS", "http://localhost/")
    uid = docker("exec", web, "awk", "/^Uid/ {print $2}", "/proc/1/status").stdout.strip()
    assert uid == "101", f"web runs as uid {uid}, not nginx (101)"


def test_nginx_runs_plan_config(sandbox, local_images, tmp_path):
    """The plan's nginx.conf, unchanged, in front of the demo web and api images."""
    images = local_images
    ssl_dir = tmp_path / "ssl"
    ssl_dir.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=ai-meeting.com", "-keyout", str(ssl_dir / "privkey.pem"),
         "-out", str(ssl_dir / "fullchain.pem")],
        check=True, capture_output=True,
    )
    for f in ssl_dir.iterdir():
        f.chmod(0o644)
    ssl_dir.chmod(0o755)
    conf = tmp_path / "nginx.conf"
    conf.write_text((FIXTURES / "plan-nginx.conf").read_text())
    conf.chmod(0o644)
    logs = tmp_path / "logs"  # a host directory, as the plan's ./logs/nginx bind mount
    logs.mkdir()

    sandbox.run(images["web"], name="web", extra=WEB_HARDENED)
    sandbox.run(images["api1"], name="api")
    nginx = sandbox.run(
        images["nginx"], name="nginx",
        mounts=[f"{conf}:/etc/nginx/nginx.conf:ro", f"{ssl_dir}:/etc/nginx/ssl:ro",
                f"{logs}:/var/log/nginx"],
    )
    ip = sandbox.ip(nginx)
    wait_for(lambda: http_get(f"https://{ip}/health", insecure_tls=True)[0] == 200, timeout=30,
             what=f"nginx\n{sandbox.logs(nginx)}")

    assert docker("exec", nginx, "nginx", "-t").returncode == 0
    # `user nginx;` honoured: workers run as the image's nginx user (uid 101), the master as root.
    listing = docker("exec", nginx, "sh", "-c",
                     "for p in /proc/[0-9]*; do "
                     "printf '%s\\t%s\\n' \"$(awk '/^Uid/{print $2}' $p/status)\" "
                     "\"$(tr '\\0' ' ' < $p/cmdline)\"; done 2>/dev/null").stdout
    procs = [line.split("\t", 1) for line in listing.splitlines() if "\t" in line]
    workers = {uid for uid, cmd in procs if cmd.startswith("nginx: worker process")}
    masters = {uid for uid, cmd in procs if cmd.startswith("nginx: master process")}
    assert workers == {"101"} and masters == {"0"}, procs
    assert docker("exec", nginx, "cat", "/var/run/nginx.pid").stdout.strip().isdigit()

    status, headers, _ = http_get(f"http://{ip}/some/path")
    assert status == 301 and headers["Location"] == "https://ai-meeting.com/some/path"
    status, headers, body = http_get(f"https://{ip}/", insecure_tls=True)
    assert status == 200 and "AI Meeting" in body
    assert headers["X-Frame-Options"] == "SAMEORIGIN"
    assert headers["Strict-Transport-Security"] == "max-age=31536000"
    status, _, body = http_get(f"https://{ip}/health", insecure_tls=True)
    assert (status, body) == (200, "healthy\n")
    status, _, body = http_get(f"https://{ip}/api/health", insecure_tls=True)
    assert status == 200 and json.loads(body)["version"] == "demo-1"
    assert ws_echo(f"wss://{ip}/ws/", ["through nginx"], insecure_tls=True) == ["through nginx"]
    # Logs land in the bind-mounted /var/log/nginx.
    assert "GET /api/health" in (logs / "access.log").read_text()
