"""A webhook receiver for Alertmanager's notifications, on an address the stack's containers
reach (docker0 for a dev stack, a swarm network's gateway for the swarm tier)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: str):
        self.notes: list[tuple[float, dict]] = []

        class Hook(BaseHTTPRequestHandler):
            def do_POST(inner):
                body = json.loads(inner.rfile.read(int(inner.headers["Content-Length"])))
                self.notes.append((time.monotonic(), body))
                inner.send_response(200)
                inner.end_headers()

            def log_message(inner, *args):
                pass

        super().__init__((address, 0), Hook)

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}/alerts"

    def start(self) -> "Receiver":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def wait(self, status: str, since: float, *, alertname: str = "TargetDown", instance: str | None = None,
             limit: float = 180) -> float:
        """Seconds from `since` until a notification with this status names the alert."""
        while time.monotonic() - since < limit:
            for at, note in list(self.notes):
                if at >= since and note["status"] == status and any(
                        a["labels"]["alertname"] == alertname and (instance is None or a["labels"].get("instance") == instance)
                        for a in note["alerts"]):
                    return at - since
            time.sleep(0.5)
        raise AssertionError(f"no {status} {alertname}{f' for {instance}' if instance else ''} within {limit} s; "
                             f"received {[n for _, n in self.notes]}")
