"""Demo AI Meeting API: the endpoints and commands the deployment relies on.

ai-meeting-api serve     HTTP on $APP_PORT (default 3000)
ai-meeting-api migrate   apply schema migrations (idempotent; waits up to $MIGRATE_TIMEOUT s)
ai-meeting-api db-check  exit 0 when the database answers SELECT 1
"""

import asyncio
import datetime
import hashlib
import hmac
import json
import logging
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

VERSION = os.environ.get("APP_VERSION", "dev")
INSTANCE = socket.gethostname()
LOG_PATH = os.environ.get("APP_LOG_FILE", "/app/logs/app.log")

# Ordered migrations: (version, SQL). Append only; never edit an applied one.
MIGRATIONS = [
    (
        "001_create_meetings",
        """
        CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
        CREATE TABLE IF NOT EXISTS meetings (
            id uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
            title text
        );
        """,
    ),
]


class JsonFormatter(logging.Formatter):
    def format(self, record):
        entry = {
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            "version": VERSION,
            "instance": INSTANCE,
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging():
    if os.environ.get("LOG_FORMAT", "json") == "json":
        formatter = JsonFormatter()
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    root = logging.getLogger()
    root.setLevel(os.environ.get("LOG_LEVEL", "info").upper())
    handlers = [logging.StreamHandler(sys.stdout)]
    file_error = None
    try:
        os.makedirs(os.path.dirname(LOG_PATH), exist_ok=True)
        handlers.append(logging.FileHandler(LOG_PATH))
    except OSError as exc:  # e.g. a host directory mounted without write access for uid 10001
        file_error = exc
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    if file_error:
        logging.warning("not logging to %s: %s", LOG_PATH, file_error)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


log = logging.getLogger("ai-meeting-api")


# --- PostgreSQL ---------------------------------------------------------------------------------
def database_url():
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    return "postgresql://{}:{}@{}:{}/{}".format(
        urllib.parse.quote(os.environ.get("DB_USER", "ai_meeting"), safe=""),
        urllib.parse.quote(os.environ.get("DB_PASSWORD", ""), safe=""),
        os.environ.get("DB_HOST", "postgres"),
        os.environ.get("DB_PORT", "5432"),
        os.environ.get("DB_NAME", "ai_meeting"),
    )


def pg_connect(timeout=5):
    import psycopg2

    return psycopg2.connect(database_url(), connect_timeout=timeout)


def pg_connect_retry(deadline_s):
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return pg_connect()
        except Exception as exc:  # psycopg2.OperationalError and DNS errors alike
            if time.monotonic() >= deadline:
                raise
            log.info("database not ready (%s), retrying", str(exc).strip().splitlines()[0])
            time.sleep(2)


def check_postgres():
    conn = pg_connect(timeout=3)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone()[0] == 1
    finally:
        conn.close()


def applied_migrations():
    conn = pg_connect(timeout=3)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('public.schema_migrations')")
            if cur.fetchone()[0] is None:
                return []
            cur.execute("SELECT version, applied_at FROM schema_migrations ORDER BY version")
            return [{"version": v, "applied_at": a.isoformat()} for v, a in cur.fetchall()]
    finally:
        conn.close()


def migrate(timeout_s):
    conn = pg_connect_retry(timeout_s)
    try:
        with conn:  # one transaction; the advisory lock serialises concurrent runs (replicas)
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(7242001)")
                cur.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version text PRIMARY KEY,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                cur.execute("SELECT version FROM schema_migrations")
                done = {row[0] for row in cur.fetchall()}
                applied = []
                for version, sql in MIGRATIONS:
                    if version in done:
                        continue
                    cur.execute(sql)
                    cur.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                    applied.append(version)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        else:
            log.info("database schema up to date (%d migrations)", len(MIGRATIONS))
    finally:
        conn.close()


# --- Redis --------------------------------------------------------------------------------------
def redis_url():
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    password = urllib.parse.quote(os.environ.get("REDIS_PASSWORD", ""), safe="")
    return "redis://:{}@{}:{}".format(
        password, os.environ.get("REDIS_HOST", "redis"), os.environ.get("REDIS_PORT", "6379")
    )


def check_redis():
    import redis

    client = redis.Redis.from_url(redis_url(), socket_timeout=3, socket_connect_timeout=3)
    try:
        return bool(client.ping())
    finally:
        client.close()


# --- MinIO (S3 HEAD bucket with AWS Signature V4) -----------------------------------------------
def _sign(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def s3_request(method, path, region="us-east-1"):
    endpoint = os.environ.get("MINIO_ENDPOINT", "minio:9000")
    use_ssl = os.environ.get("MINIO_USE_SSL", "false").lower() == "true"
    if "://" not in endpoint:
        endpoint = ("https://" if use_ssl else "http://") + endpoint
    host = urllib.parse.urlsplit(endpoint).netloc
    access_key = os.environ.get("MINIO_ROOT_USER") or os.environ.get("MINIO_ACCESS_KEY", "")
    secret_key = os.environ.get("MINIO_ROOT_PASSWORD") or os.environ.get("MINIO_SECRET_KEY", "")
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(b"").hexdigest()
    canonical_uri = urllib.parse.quote(path, safe="/-_.~")
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [method, canonical_uri, "", "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
         signed, payload_hash]
    )
    scope = f"{date}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _sign(_sign(_sign(_sign(("AWS4" + secret_key).encode(), date), region), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, "
        f"Signature={signature}"
    )
    req = urllib.request.Request(endpoint + canonical_uri, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def check_minio():
    bucket = os.environ.get("MINIO_BUCKET", "ai-meeting-recordings")
    status = s3_request("HEAD", "/" + bucket)
    if status != 200:
        raise RuntimeError(f"HEAD bucket {bucket}: HTTP {status}")
    return True


# --- HTTP server --------------------------------------------------------------------------------
def make_app():
    from aiohttp import WSMsgType, web

    async def health(_request):
        return web.json_response({"status": "ok", "version": VERSION, "instance": INSTANCE})

    async def health_deps(_request):
        loop = asyncio.get_running_loop()
        checks = {}
        for name, fn in (("postgres", check_postgres), ("redis", check_redis), ("minio", check_minio)):
            try:
                ok = await loop.run_in_executor(None, fn)
                checks[name] = "ok" if ok else "failed"
            except Exception as exc:
                checks[name] = "error: " + (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        healthy = all(v == "ok" for v in checks.values())
        body = {"status": "ok" if healthy else "degraded", "version": VERSION,
                "instance": INSTANCE, "checks": checks}
        if not healthy:
            log.warning("dependency check failed: %s", checks)
        return web.json_response(body, status=200 if healthy else 503)

    async def whoami(_request):
        return web.Response(text=INSTANCE + "\n")

    async def migrations(_request):
        loop = asyncio.get_running_loop()
        try:
            rows = await loop.run_in_executor(None, applied_migrations)
        except Exception as exc:
            return web.json_response({"error": str(exc).strip()}, status=503)
        return web.json_response({"migrations": [r["version"] for r in rows], "details": rows})

    async def root(_request):
        return web.json_response({"service": "ai-meeting-api", "version": VERSION,
                                  "instance": INSTANCE})

    async def websocket(request):
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        log.info("websocket connected from %s", request.headers.get("X-Real-IP", request.remote))
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            elif msg.type == WSMsgType.ERROR:
                break
        return ws

    @web.middleware
    async def access_log(request, handler):
        start = time.monotonic()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            REQUESTS[(request.method, str(exc.status))] = REQUESTS.get((request.method, str(exc.status)), 0) + 1
            raise
        REQUESTS[(request.method, str(response.status))] = REQUESTS.get((request.method, str(response.status)), 0) + 1
        if request.path != "/health":
            log.info("%s %s %s %.1fms", request.method, request.path_qs, response.status,
                     (time.monotonic() - start) * 1000)
        return response

    app = web.Application(middlewares=[access_log])
    app.router.add_get("/", root)
    app.router.add_get("/health", health)
    app.router.add_get("/health/deps", health_deps)
    app.router.add_get("/whoami", whoami)
    app.router.add_get("/migrations", migrations)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/ws/", websocket)
    app.router.add_get("/ws/{tail:.*}", websocket)
    return app


# Requests served, by (method, status): the API's own counters for Prometheus (ENABLE_METRICS).
REQUESTS = {}
STARTED = time.time()


def render_metrics(dependencies):
    lines = [
        "# HELP ai_meeting_api_info The running API's version and instance.",
        "# TYPE ai_meeting_api_info gauge",
        f'ai_meeting_api_info{{version="{VERSION}",instance_name="{INSTANCE}"}} 1',
        "# HELP process_start_time_seconds Start time of the process since the epoch.",
        "# TYPE process_start_time_seconds gauge",
        f"process_start_time_seconds {STARTED:.3f}",
        "# HELP http_requests_total HTTP requests served by the API, by method and status.",
        "# TYPE http_requests_total counter",
    ]
    lines += [f'http_requests_total{{method="{m}",status="{s}"}} {n}' for (m, s), n in sorted(REQUESTS.items())]
    lines += [
        "# HELP ai_meeting_api_dependency_up Whether the API reaches a dependency (1) or not (0).",
        "# TYPE ai_meeting_api_dependency_up gauge",
    ]
    lines += [f'ai_meeting_api_dependency_up{{dependency="{d}"}} {int(ok)}' for d, ok in sorted(dependencies.items())]
    return "\n".join(lines) + "\n"


def make_metrics_app():
    from aiohttp import web

    async def metrics(_request):
        loop = asyncio.get_running_loop()
        deps = {}
        for name, fn in (("postgres", check_postgres), ("redis", check_redis), ("minio", check_minio)):
            try:
                deps[name] = bool(await loop.run_in_executor(None, fn))
            except Exception:
                deps[name] = False
        return web.Response(text=render_metrics(deps), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


def serve():
    from aiohttp import web

    port = int(os.environ.get("APP_PORT", "3000"))
    metrics_port = int(os.environ.get("METRICS_PORT", "9090"))
    with_metrics = os.environ.get("ENABLE_METRICS", "false").lower() == "true" and metrics_port != port

    async def start():
        runners = []
        for app, p in [(make_app(), port)] + ([(make_metrics_app(), metrics_port)] if with_metrics else []):
            runner = web.AppRunner(app, access_log=None, handle_signals=True)
            await runner.setup()
            await web.TCPSite(runner, "0.0.0.0", p).start()
            runners.append(runner)
        return runners

    log.info("ai-meeting-api %s listening on 0.0.0.0:%d%s", VERSION, port,
             f", metrics on 0.0.0.0:{metrics_port}/metrics" if with_metrics else "")
    loop = asyncio.new_event_loop()
    runners = loop.run_until_complete(start())
    try:
        loop.run_forever()
    except (KeyboardInterrupt, web.GracefulExit):
        pass
    finally:
        for runner in runners:
            loop.run_until_complete(runner.cleanup())


def main(argv):
    setup_logging()
    command = argv[1] if len(argv) > 1 else "serve"
    if command == "serve":
        serve()
        return 0
    if command == "migrate":
        try:
            migrate(float(os.environ.get("MIGRATE_TIMEOUT", "60")))
        except Exception:
            log.exception("migration failed")
            return 1
        return 0
    if command == "db-check":
        try:
            check_postgres()
        except Exception as exc:
            log.error("database check failed: %s", str(exc).strip())
            return 1
        log.info("database ok")
        return 0
    if command == "version":
        print(VERSION)
        return 0
    print(__doc__.strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
