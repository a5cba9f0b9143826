"""A bounded load loop through nginx while something changes (scale, rollout, bad release).

Each worker opens a fresh HTTPS connection per request to 127.0.0.1 (so every request goes
through nginx's upstream choice again) and records status and latency. It stops by itself
after `max_seconds` or `max_requests`, whichever comes first.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    ok: int = 0
    failed: list[str] = field(default_factory=list)  # "t=12.3s: <what>"
    bodies: dict[str, int] = field(default_factory=dict)  # body -> count (e.g. versions seen)

    @property
    def total(self) -> int:
        return self.ok + len(self.failed)

    def summary(self) -> str:
        return f"{self.ok} ok, {len(self.failed)} failed of {self.total}; first failures: {self.failed[:5]}"


class LoadLoop:
    def __init__(self, port: int, path: str, *, workers: int = 4, timeout: float = 5.0,
                 max_seconds: float = 600, max_requests: int = 200_000, body_key=None):
        self.port, self.path, self.workers, self.timeout = port, path, workers, timeout
        self.max_seconds, self.max_requests = max_seconds, max_requests
        self.body_key = body_key  # body -> short key to count (None: don't keep bodies)
        self.result = LoadResult()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._ctx = ssl.create_default_context()
        self._ctx.check_hostname = False
        self._ctx.verify_mode = ssl.CERT_NONE

    def _one(self, started: float) -> None:
        t = time.monotonic() - started
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=self.timeout, context=self._ctx)
            conn.request("GET", self.path, headers={"Host": "localhost"})
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
            conn.close()
            with self._lock:
                if resp.status == 200:
                    self.result.ok += 1
                    if self.body_key:
                        key = self.body_key(body)
                        self.result.bodies[key] = self.result.bodies.get(key, 0) + 1
                else:
                    self.result.failed.append(f"t={t:.1f}s: HTTP {resp.status} {body[:80]!r}")
        except Exception as exc:  # noqa: BLE001 - every failure counts, whatever it is
            with self._lock:
                self.result.failed.append(f"t={t:.1f}s: {type(exc).__name__}: {exc}")

    def _work(self, started: float) -> None:
        while not self._stop.is_set():
            if time.monotonic() - started > self.max_seconds or self.result.total >= self.max_requests:
                return
            self._one(started)
            time.sleep(0.02)

    def __enter__(self) -> "LoadLoop":
        started = time.monotonic()
        self._threads = [threading.Thread(target=self._work, args=(started,), daemon=True) for _ in range(self.workers)]
        for th in self._threads:
            th.start()
        time.sleep(1)  # some traffic before the change starts
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(1)  # and some after it finished
        self._stop.set()
        for th in self._threads:
            th.join(timeout=self.timeout + 5)
