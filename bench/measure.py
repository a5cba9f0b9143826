"""Instruments: a probe through nginx, Docker's event stream, wrk, container CPU counters.

Every load goes to 127.0.0.1 only: nginx's published ports, the API's published port (compose),
or 127.0.0.1 inside a container's own network namespace (nsenter), never a bridge address.
Every loop is bounded in time.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import docker

from .settings import BENCH

WRK_SCRIPT = BENCH / "wrk" / "timeline.lua"


# ---- the probe: what a visitor sees through nginx ------------------------------------------------


@dataclass
class Sample:
    start: float  # monotonic
    end: float
    status: int | None  # None: no HTTP answer (refused, reset, timeout)
    version: str = ""
    instance: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


class Probe:
    """GET /api/health through nginx over HTTPS, a new connection each time, every `period`
    seconds, in a thread. Stops itself after `max_seconds`."""

    def __init__(self, https_port: int, period: float = 0.1, timeout: float = 5.0, max_seconds: float = 900):
        self.port, self.period, self.timeout, self.max_seconds = https_port, period, timeout, max_seconds
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ctx = ssl.create_default_context()
        self._ctx.check_hostname = False
        self._ctx.verify_mode = ssl.CERT_NONE

    def once(self) -> Sample:
        t0 = time.monotonic()
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=self.timeout, context=self._ctx)
            conn.request("GET", "/api/health", headers={"Host": "localhost", "Connection": "close"})
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
            conn.close()
            version = instance = ""
            if resp.status == 200:
                try:
                    doc = json.loads(body)
                    version, instance = doc.get("version", ""), doc.get("instance", "")
                except ValueError:
                    pass
            return Sample(t0, time.monotonic(), resp.status, version, instance)
        except Exception as exc:  # noqa: BLE001 - any failure is a failed request
            return Sample(t0, time.monotonic(), None, error=f"{type(exc).__name__}: {exc}"[:120])

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set() and time.monotonic() - started < self.max_seconds:
            self.samples.append(self.once())
            self._stop.wait(self.period)

    def __enter__(self) -> "Probe":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(self.timeout + 2)

    def since(self, t: float) -> list[Sample]:
        return [s for s in list(self.samples) if s.start >= t]

    def failures(self, t0: float, t1: float | None = None) -> list[Sample]:
        return [s for s in list(self.samples) if s.start >= t0 and (t1 is None or s.start <= t1) and not s.ok]


def wait_for(predicate, timeout: float, interval: float = 0.2) -> float | None:
    """Monotonic time at which predicate() first held, or None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.monotonic()
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


# ---- containers -----------------------------------------------------------------------------------


def containers(network: str) -> list[dict]:
    ids = docker("ps", "-aq", "--filter", f"network={network}").stdout.split()
    if not ids:
        return []
    res = docker("inspect", *ids, check=False)
    try:
        return json.loads(res.stdout or "[]")
    except ValueError:
        return []


def service_of(c: dict) -> str:
    return (c.get("Config", {}).get("Labels") or {}).get("ai-meeting.service", "?")


def all_healthy(network: str, expect: dict[str, int]) -> bool:
    """Every container on the network running and healthy, with `expect[service]` of each."""
    cs = [c for c in containers(network) if c["State"]["Status"] == "running"]
    counts: dict[str, int] = {}
    for c in cs:
        health = (c["State"].get("Health") or {}).get("Status")
        if health != "healthy":
            return False
        counts[service_of(c)] = counts.get(service_of(c), 0) + 1
    return all(counts.get(s, 0) == n for s, n in expect.items())


def api_containers(network: str) -> list[dict]:
    return [c for c in containers(network) if service_of(c) == "api" and c["State"]["Status"] == "running"]


def cpu_ns(container_id: str) -> int:
    """CPU time used by a container so far (cgroup v1 cpuacct or v2 cpu.stat)."""
    for path in (f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage",
                 f"/sys/fs/cgroup/cpu,cpuacct/docker/{container_id}/cpuacct.usage"):
        if os.path.exists(path):
            return int(Path(path).read_text())
    for path in (f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat",
                 f"/sys/fs/cgroup/docker/{container_id}/cpu.stat"):
        if os.path.exists(path):
            m = re.search(r"usage_usec (\d+)", Path(path).read_text())
            return int(m.group(1)) * 1000 if m else 0
    return 0


def process_cpu_ns(name: str) -> int:
    """CPU time (user+system) of every process with this command name, e.g. dockerd (json-file
    logging of nginx's access log happens there, outside the container's cgroup)."""
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        if comm == name:
            fields = stat[stat.rindex(")") + 2:].split()
            total += (int(fields[11]) + int(fields[12])) * 1_000_000_000 // tick
    return total


# ---- Docker's event stream: when each container started and became healthy ----------------------


class DockerEvents:
    """`docker events` for the containers of one stack label, timestamps in wall-clock seconds."""

    def __init__(self, stack_label: str):
        self.label = stack_label
        self.events: list[dict] = []
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "DockerEvents":
        self._proc = subprocess.Popen(
            ["docker", "events", "--format", "{{json .}}", "--filter", "type=container",
             "--filter", f"label=ai-meeting.stack={self.label}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        time.sleep(0.3)  # subscribed before anything happens
        return self

    def _read(self) -> None:
        assert self._proc and self._proc.stdout
        for line in self._proc.stdout:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            attrs = e.get("Actor", {}).get("Attributes", {})
            self.events.append({
                "t": e.get("timeNano", 0) / 1e9, "action": e.get("Action", e.get("status", "")),
                "id": e.get("id", "")[:12], "name": attrs.get("name", ""), "service": attrs.get("ai-meeting.service", ""),
            })

    def __exit__(self, *exc) -> None:
        time.sleep(0.3)
        if self._proc:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._thread:
            self._thread.join(2)

    def start_to_healthy(self, t0_wall: float) -> list[dict]:
        """Per container started after t0: created, started and healthy (seconds after t0)."""
        rows: dict[str, dict] = {}
        for e in self.events:
            if e["t"] < t0_wall:
                continue
            row = rows.setdefault(e["id"], {"id": e["id"], "name": e["name"], "service": e["service"]})
            if e["action"] == "create":
                row.setdefault("created", e["t"] - t0_wall)
            elif e["action"] == "start":
                row.setdefault("started", e["t"] - t0_wall)
            elif e["action"].startswith("health_status: healthy"):
                row.setdefault("healthy", e["t"] - t0_wall)
            elif e["action"] in ("destroy", "die"):
                row.setdefault(e["action"], e["t"] - t0_wall)
        out = []
        for row in rows.values():
            if "started" in row and "healthy" in row:
                row["start_to_healthy"] = row["healthy"] - row["started"]
            out.append(row)
        return sorted(out, key=lambda r: r.get("started", 1e9))


# ---- wrk ------------------------------------------------------------------------------------------


def netns(container_id: str) -> list[str]:
    """Prefix that runs a command in a container's network namespace (its own 127.0.0.1)."""
    pid = docker("inspect", "-f", "{{.State.Pid}}", container_id).stdout.strip()
    return ["nsenter", "-t", pid, "-n"]


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


@dataclass
class WrkResult:
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    errors: int
    non2xx: int
    raw: str = field(repr=False, default="")


def wrk_throughput(url: str, seconds: int, *, prefix: list[str] | None = None, connections: int = 16,
                   threads: int = 2, host: str | None = None) -> WrkResult:
    """Flat-out keep-alive load, wrk's own numbers (no Lua: the script costs throughput)."""
    cmd = [*(prefix or []), "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if host:
        cmd += ["-H", f"Host: {host}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(x) for x in sock.groups()) if sock else 0
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    return WrkResult(rps, requests, _ms(lat.get("50", "nan")), _ms(lat.get("99", "nan")), errors, non2xx, out)


class WrkTimeline:
    """Steady load for the length of a change: wrk with bench/wrk/timeline.lua, one new TLS
    connection per request (so every request goes through nginx's upstream choice again and a
    reload never closes an idle keep-alive connection under it), `delay_ms` between requests on
    each connection. Stopped with SIGINT (wrk then reports); bounded by `max_seconds`."""

    def __init__(self, url: str, out: Path, *, connections: int, delay_ms: int, max_seconds: int = 600):
        self.url, self.out = url, out
        self.connections, self.delay_ms, self.max_seconds = connections, delay_ms, max_seconds
        self._proc: subprocess.Popen | None = None
        self.result: dict = {}
        self.stdout = ""

    def __enter__(self) -> "WrkTimeline":
        self.out.unlink(missing_ok=True)
        self._proc = subprocess.Popen(
            ["wrk", "-t2", f"-c{self.connections}", f"-d{self.max_seconds}s", "--timeout", "5s",
             "-H", "Host: localhost", "-H", "Connection: close", "-s", str(WRK_SCRIPT), self.url,
             "--", str(self.out), str(self.delay_ms)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        return self

    def __exit__(self, *exc) -> None:
        assert self._proc
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
        try:
            self.stdout, _ = self._proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self.stdout, _ = self._proc.communicate()
        if self.out.exists():
            self.result = json.loads(self.out.read_text())


# ---- machine --------------------------------------------------------------------------------------


def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()
