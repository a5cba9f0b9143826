"""Faults, recovery and hardening on the prod test server (issue #11), as functions that act on
a deployed stack: a reboot, backup -> wipe -> restore by checksum, a full data filesystem, a
fail2ban ban, the ports that answer from another network namespace.

Used by test_prod_stack.py (section 8b), which records the figures; every function leaves the
stack as it found it (converged, serving) or fails saying what is left to repair.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import time
from typing import Any, Callable

from tests.prod import stack_checks
from tests.prod.conftest import ProdServer
from tests.prod.stack_checks import INSTALL, PREFIX, SERVICES, _mc, _psql, _redis, docker

DATA = f"{INSTALL}/data"
DATA_SERVICES = ("postgres", "redis", "minio")


# --- waiting -------------------------------------------------------------------------------------


def container_states(s: ProdServer) -> dict[str, str]:
    """Every container of the stack: name -> health (or state when it has no healthcheck)."""
    out = docker(s, f"ps -a --filter network={PREFIX}-network --format '{{{{.Names}}}} {{{{.Label \"ai-meeting.service\"}}}}'",
                 check=False, timeout=30)
    if out.code != 0 or not out.stdout.strip():
        return {}
    names = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    fmt = "{{.Name}} {{.Config.Labels}} {{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}"
    res = docker(s, f"inspect -f {shlex.quote(fmt)} {' '.join(names)}", check=False, timeout=30)
    states = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if parts:
            states[parts[0].lstrip("/")] = parts[-1]
    return states


def all_healthy(s: ProdServer) -> bool:
    try:
        containers = stack_checks.stack_containers(s)
    except (AssertionError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return False
    running = [c for c in containers if c["State"]["Status"] == "running"]
    services = sorted(c["Config"]["Labels"].get("ai-meeting.service", "") for c in running)
    return services == sorted(SERVICES) and all(
        (c["State"].get("Health") or {}).get("Status") == "healthy" for c in running)


def wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 1.0) -> float:
    """Seconds until `check()` is true; fails after `timeout` seconds."""
    started = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - started
        except Exception:  # noqa: BLE001 - the server may be half up: keep asking
            pass
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)


def ssh_answers(s: ProdServer) -> bool:
    return s.ssh("true", check=False, timeout=20).code == 0


def deps(s: ProdServer, root_pem: str) -> tuple[int, str]:
    status, _, body, _ = stack_checks.https(s, root_pem, "/api/health/deps")
    return status, body


# --- data fingerprints (backup -> wipe -> restore) ----------------------------------------------


def postgres_fingerprint(s: ProdServer) -> dict[str, str]:
    """Every table of the application database: `rows md5-of-all-rows` (order-independent)."""
    tables = _psql(s, "SELECT schemaname || '.' || tablename FROM pg_tables "
                      "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1").split()
    if not tables:
        return {}
    sql = " UNION ALL ".join(
        f"SELECT '{t}', count(*)::text || ' ' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '-') FROM {t} x"
        for t in tables)
    return dict(line.split("|", 1) for line in _psql(s, sql).splitlines())


# Every key's type and value, hashed in Redis itself (one round trip, any number of keys).
REDIS_FINGERPRINT = """
local keys = redis.call('KEYS', '*')
table.sort(keys)
local parts = {}
for _, k in ipairs(keys) do
  local t = redis.call('TYPE', k)['ok']
  local v
  if t == 'string' then v = redis.call('GET', k)
  elseif t == 'hash' then local h = redis.call('HGETALL', k); v = table.concat(h, '\\0')
  elseif t == 'list' then v = table.concat(redis.call('LRANGE', k, 0, -1), '\\0')
  elseif t == 'set' then local m = redis.call('SMEMBERS', k); table.sort(m); v = table.concat(m, '\\0')
  elseif t == 'zset' then v = table.concat(redis.call('ZRANGE', k, 0, -1, 'WITHSCORES'), '\\0')
  else v = '?' end
  parts[#parts + 1] = k .. '\\1' .. t .. '\\1' .. redis.sha1hex(v)
end
return {#keys, redis.sha1hex(table.concat(parts, '\\2'))}
"""


def redis_fingerprint(s: ProdServer) -> str:
    return " ".join(_redis(s, "EVAL", REDIS_FINGERPRINT, "0").split())


def minio_fingerprint(s: ProdServer, minio: dict[str, Any]) -> dict[str, str]:
    """Every object of the bucket: key -> sha256 of its bytes (read back through the S3 API)."""
    bucket = minio["bucket"]
    listing = _mc(s, minio, f"ls --recursive --json t/{bucket}").stdout
    keys = sorted(json.loads(line)["key"] for line in listing.splitlines() if line.strip())
    if not keys:
        return {}
    alias = f"http://{minio['access_key']}:{minio['secret_key']}@127.0.0.1:9000"
    script = "; ".join(f"mc cat t/{bucket}/{shlex.quote(k)} | sha256sum" for k in keys)
    out = docker(s, f"exec -e MC_HOST_t={shlex.quote(alias)} {PREFIX}-minio sh -c {shlex.quote(script)}").stdout
    sums = [line.split()[0] for line in out.splitlines()]
    assert len(sums) == len(keys), out
    return dict(zip(keys, sums))


def fingerprint(s: ProdServer, minio: dict[str, Any]) -> dict[str, Any]:
    return {"postgres": postgres_fingerprint(s), "redis": redis_fingerprint(s),
            "minio": minio_fingerprint(s, minio)}


def seed_data(s: ProdServer, minio: dict[str, Any], rows: int, keys: int, objects: int) -> None:
    _psql(s, "CREATE TABLE IF NOT EXISTS restore_probe (id int PRIMARY KEY, v text, at timestamptz DEFAULT now())")
    _psql(s, f"INSERT INTO restore_probe (id, v) SELECT g, md5(g::text) FROM generate_series(1, {rows}) g "
             "ON CONFLICT DO NOTHING")
    lua = ("for i = 1, tonumber(ARGV[1]) do redis.call('SET', 'restore:key:' .. i, 'value-' .. i) end "
           "redis.call('HSET', 'restore:hash', 'a', '1', 'b', '2') "
           "redis.call('RPUSH', 'restore:list', 'x', 'y', 'z') return 1")
    _redis(s, "EVAL", lua, "0", str(keys))
    bucket = minio["bucket"]
    alias = f"http://{minio['access_key']}:{minio['secret_key']}@127.0.0.1:9000"
    script = "; ".join(
        f"head -c {1000 + 997 * i} /dev/urandom | mc pipe t/{bucket}/restore/object-{i}.bin >/dev/null"
        for i in range(objects))
    docker(s, f"exec -e MC_HOST_t={shlex.quote(alias)} {PREFIX}-minio sh -c {shlex.quote(script)}")


def wipe_data(s: ProdServer, minio: dict[str, Any]) -> None:
    """What a bad day does: the application's tables, every key and every object gone."""
    tables = _psql(s, "SELECT string_agg(quote_ident(schemaname) || '.' || quote_ident(tablename), ', ') "
                      "FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")
    if tables:
        _psql(s, f"DROP TABLE {tables} CASCADE")
    _redis(s, "FLUSHALL")
    _mc(s, minio, f"rm --recursive --force t/{minio['bucket']}")


def api_replicas(s: ProdServer) -> dict[str, str]:
    """Running API replicas (found by label, as restore.sh finds them): name -> StartedAt."""
    ids = docker(s, "ps -q --filter label=ai-meeting.service=api --filter label=ai-meeting.kind=service").stdout.split()
    out = docker(s, f"inspect -f '{{{{.Name}}}} {{{{.State.StartedAt}}}}' {' '.join(ids)}").stdout if ids else ""
    return {line.split()[0].lstrip("/"): line.split()[1] for line in out.splitlines() if line.strip()}


def started_at(s: ProdServer, names: list[str]) -> dict[str, str]:
    out = docker(s, f"inspect -f '{{{{.Name}}}} {{{{.State.StartedAt}}}}' {' '.join(names)}").stdout
    return {line.split()[0].lstrip("/"): line.split()[1] for line in out.splitlines() if line.strip()}


def latest_backup(s: ProdServer) -> str:
    return s.sudo(f"ls -1 {INSTALL}/backups | grep -E '^[0-9]{{8}}_[0-9]{{6}}$' | sort | tail -1").stdout.strip()


# --- ports from another network namespace -------------------------------------------------------


async def _open_ports(host: str, ports: range, timeout: float, concurrency: int) -> list[int]:
    sem = asyncio.Semaphore(concurrency)
    found: list[int] = []

    async def probe(port: int) -> None:
        async with sem:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            except (OSError, asyncio.TimeoutError):
                return
            found.append(port)
            writer.close()

    await asyncio.gather(*(probe(p) for p in ports))
    return sorted(found)


def open_tcp_ports(host: str, ports: range = range(1, 10001), timeout: float = 2.0, concurrency: int = 1000) -> list[int]:
    """TCP ports of `host` that accept a connection from here (ufw drops the rest: time-outs)."""
    # A loop of its own, never the thread's current one: asyncio.run() would leave the main
    # thread without one, which breaks later tests that run Pulumi mocks.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_open_ports(host, ports, timeout, concurrency))
    finally:
        loop.close()


# --- fail2ban ---------------------------------------------------------------------------------


def banned(s: ProdServer) -> list[str]:
    out = s.sudo("fail2ban-client status sshd").stdout
    m = re.search(r"Banned IP list:\s*(.*)$", out, re.M)
    return m.group(1).split() if m else []


# --- a small filesystem under the data directory (disk full) ------------------------------------


def stop_data_services(s: ProdServer) -> None:
    docker(s, "stop -t 30 " + " ".join(f"{PREFIX}-{x}" for x in DATA_SERVICES), timeout=180)


def start_data_services(s: ProdServer) -> None:
    docker(s, "start " + " ".join(f"{PREFIX}-{x}" for x in DATA_SERVICES), timeout=180)


def data_on_small_fs(s: ProdServer, headroom_mb: int) -> int:
    """Move the data directory onto a tmpfs of (its size + headroom) MB mounted over it, data
    services stopped meanwhile. The directory underneath keeps the old copy. Returns the size."""
    used_mb = int(s.sudo(f"du -sm {DATA}").stdout.split()[0])
    size = used_mb + headroom_mb
    stop_data_services(s)
    s.sudo(f"rm -rf /var/tmp/aim-data-in && cp -a {DATA} /var/tmp/aim-data-in"
           f" && mount -t tmpfs -o size={size}m,mode=0755 aim-data-full {DATA}"
           f" && cp -a /var/tmp/aim-data-in/. {DATA}/ && rm -rf /var/tmp/aim-data-in", timeout=300)
    start_data_services(s)
    return size


def data_back_on_disk(s: ProdServer) -> None:
    """Undo data_on_small_fs, keeping what was written meanwhile (the tmpfs is the live copy)."""
    if s.sudo(f"mountpoint -q {DATA}", check=False).code != 0:
        return
    stop_data_services(s)
    s.sudo(f"rm -f {DATA}/.filler* && rm -rf /var/tmp/aim-data-out && cp -a {DATA} /var/tmp/aim-data-out"
           f" && umount {DATA}"
           f" && for d in {' '.join(DATA_SERVICES)}; do rm -rf {DATA}/$d && cp -a /var/tmp/aim-data-out/$d {DATA}/$d; done"
           f" && rm -rf /var/tmp/aim-data-out", timeout=300)
    start_data_services(s)


def fill(s: ProdServer) -> str:
    """Fill the data filesystem to the last block; df's view after."""
    s.sudo(f"dd if=/dev/zero of={DATA}/.filler bs=1M status=none; "
           f"dd if=/dev/zero of={DATA}/.filler-tail bs=4k status=none; sync; true", timeout=300)
    return s.sudo(f"df -k --output=avail,size {DATA} | tail -1").stdout.strip()
