"""Monitoring that really scrapes (R17), deployed through the real engine.

A dev stack (2 API replicas) with `monitoring.enabled` and Grafana off (no Grafana image here):
Prometheus healthy, every target up, the API's metrics present, every probe passing, the
Grafana dashboard's queries answered by the live Prometheus; then one API replica is stopped
with `docker stop` and the TargetDown alert must fire (seconds recorded), and resolve when it
is started again. The `for:` durations and intervals are shortened through config (production
defaults: 15 s intervals, 2 min). Ends with `pulumi preview --expect-no-changes`, then destroy.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from render.monitoring import DASHBOARD_PANELS
from tests.e2e.engine import PulumiProject, require_engine, require_local_images

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.timeout(1500)]

PREFIX = "aim-mon"
# Below the kernel's ephemeral range (32768-60999): a port there can be held by a client
# socket of another test's load loop (TIME_WAIT), and docker-proxy then cannot bind it.
HTTP, HTTPS = 24080, 24443
LOOPBACK = {"postgres": 24432, "redis": 24379, "minio": 24900, "minio_console": 24901, "api": 24300}
PROMETHEUS = 24091
MONITORING = {
    "enabled": True,
    "grafana": False,
    "prometheus_port": PROMETHEUS,
    "grafana_port": 24002,
    "scrape_interval": "2s",
    "evaluation_interval": "2s",
    "alerts": {"target_down_for": "10s"},
}
API = {"replicas": 2, "migrate_command": ["ai-meeting-api", "migrate"], "start_timeout": 90}
PROBES = {"nginx", "api-via-nginx", "web", "minio", "postgres", "redis"}


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def prom(path: str, **params: str) -> dict:
    url = f"http://127.0.0.1:{PROMETHEUS}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def query(expr: str) -> list[dict]:
    doc = prom("/api/v1/query", query=expr)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def wait_for(what: str, check, limit: float = 120, every: float = 0.5):
    """Polls `check` until it returns something truthy; returns (value, seconds)."""
    started = time.monotonic()
    last = None
    while time.monotonic() - started < limit:
        try:
            last = check()
        except (OSError, ValueError) as e:  # Prometheus not answering yet
            last = e
        else:
            if last:
                return last, time.monotonic() - started
        time.sleep(every)
    raise AssertionError(f"{what}: not within {limit:.0f} s; last: {last!r}")


def replica_container(replica: int) -> str:
    ids = docker("ps", "-aq", "--filter", f"network={PREFIX}-network", "--filter", "label=ai-meeting.service=api",
                 "--filter", f"label=ai-meeting.replica={replica}").stdout.split()
    assert len(ids) == 1, ids
    return ids[0]


def target_down_alerts() -> list[dict]:
    return [a for a in prom("/api/v1/alerts")["data"]["alerts"] if a["labels"]["alertname"] == "TargetDown"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    env = require_engine()
    require_local_images()
    p = PulumiProject(tmp_path_factory.mktemp("monitoring"), "mon", env, stack_file="Pulumi.dev.yaml")
    p.configure(name_prefix=PREFIX, nginx={"bind_address": "127.0.0.1", "http_port": HTTP, "https_port": HTTPS},
                loopback_ports=LOOPBACK, api=API, monitoring=MONITORING)
    try:
        p.up()
        yield p
    finally:
        p.run("destroy", "--yes", "--stack", "mon", "--skip-preview", check=False, timeout=900)


def test_prometheus_is_healthy_and_every_target_is_up(stack):
    assert stack.outputs()["prometheus_url"] == f"http://127.0.0.1:{PROMETHEUS}"
    assert "grafana_url" not in stack.outputs()
    with urllib.request.urlopen(f"http://127.0.0.1:{PROMETHEUS}/-/healthy", timeout=10) as resp:
        assert resp.status == 200

    def all_up():
        targets = prom("/api/v1/targets")["data"]["activeTargets"]
        return targets if targets and all(t["health"] == "up" for t in targets) else None

    targets, _ = wait_for("every scrape target up", all_up)
    api = sorted(t["labels"]["instance"] for t in targets if t["labels"]["job"] == "api")
    assert api == ["api-1:9090", "api-2:9090"]
    assert {t["labels"]["job"] for t in targets} >= {"prometheus", "api", "node", "blackbox", "probe-https_2xx",
                                                      "probe-http_2xx", "probe-tcp_connect"}
    probes, _ = wait_for("every service probe passing",
                         lambda: (r := query('probe_success{job=~"probe-.*"} == 1')) and len(r) == len(PROBES) and r)
    assert {r["metric"]["service"] for r in probes} == PROBES


def test_the_api_metrics_are_scraped_from_every_replica(stack):
    # The healthchecks call /health every 2 s, so both replicas count requests.
    requests, _ = wait_for("http_requests_total of both replicas",
                           lambda: (r := query('sum by (instance) (http_requests_total{job="api",status="200"})')) and len(r) == 2 and r)
    assert all(float(r["value"][1]) > 0 for r in requests)
    deps = query('ai_meeting_api_dependency_up{job="api"}')
    assert {(r["metric"]["instance"], r["metric"]["dependency"]) for r in deps} == {
        (i, d) for i in ("api-1:9090", "api-2:9090") for d in ("postgres", "redis", "minio")}
    assert all(r["value"][1] == "1" for r in deps), deps
    assert len(query('ai_meeting_api_info{job="api"}')) == 2
    assert len(query('process_start_time_seconds{job="api"}')) == 2


def test_disk_and_certificate_are_measured_and_nothing_alerts(stack):
    root = query('node_filesystem_size_bytes{job="node",mountpoint="/"}')
    assert root and float(root[0]["value"][1]) > 0, "the node exporter sees the host's root filesystem"
    expiry = query('probe_ssl_earliest_cert_expiry{service="nginx"} - time()')
    assert expiry and float(expiry[0]["value"][1]) > 14 * 86400, "the self-signed certificate has a year"
    rules = {r["name"] for g in prom("/api/v1/rules")["data"]["groups"] for r in g["rules"]}
    assert rules == {"TargetDown", "ServiceProbeFailed", "ApiHighErrorRate", "DiskAlmostFull", "CertificateExpiresSoon"}
    firing = [a["labels"] for a in prom("/api/v1/alerts")["data"]["alerts"] if a["state"] == "firing"]
    assert not firing, firing


@pytest.mark.figures(("Grafana dashboard queries answered by the live Prometheus", "all, without error; all but the backup age with data"))
def test_every_grafana_dashboard_query_runs_on_the_live_prometheus(stack, record):
    def poll() -> dict[str, list[str]]:
        """Each panel's query on the live Prometheus: answered (status success), with data, errors."""
        out: dict[str, list[str]] = {"answered": [], "with data": [], "errors": []}
        for panel in DASHBOARD_PANELS:
            doc = prom("/api/v1/query", query=panel.expr)
            if doc.get("status") != "success":
                out["errors"].append(f"{panel.title}: {doc}")
                continue
            out["answered"].append(panel.title)
            if doc["data"]["result"]:
                out["with data"].append(panel.title)
        return out

    # The backup age has no data in dev (backups run on servers); every other panel has once
    # its series have two samples in the window (rate() needs them; scrape interval 2 s).
    expected_with_data = sorted(p.title for p in DASHBOARD_PANELS if p.title != "Backup age")
    seen: list[dict[str, list[str]]] = []

    def all_answered_and_with_data() -> dict | None:
        seen.append(poll())
        last = seen[-1]
        return last if not last["errors"] and sorted(last["with data"]) == expected_with_data else None

    try:
        wait_for("every dashboard panel but the backup age with data", all_answered_and_with_data, limit=60)
    except AssertionError:
        pass
    last = seen[-1] if seen else {"answered": [], "with data": [], "errors": ["Prometheus never answered"]}
    total = len(DASHBOARD_PANELS)
    ok = not last["errors"] and len(last["answered"]) == total and sorted(last["with data"]) == expected_with_data
    record("Grafana dashboard queries answered by the live Prometheus",
           f"{len(last['answered'])} of {total} answered ({len(last['with data'])} with data)"
           + (f"; errors: {last['errors']}" if last["errors"] else ""),
           "all, without error; all but the backup age with data", ok)
    assert ok, last


def test_a_stopped_api_replica_fires_target_down_and_resolves(stack, record):
    name = replica_container(1)
    assert not target_down_alerts()
    stopped = time.monotonic()
    docker("stop", name)
    try:
        def firing():
            return [a for a in target_down_alerts() if a["state"] == "firing" and a["labels"].get("instance") == "api-1:9090"]

        alerts, fired = wait_for("TargetDown firing for api-1", firing, limit=180)
        fired = time.monotonic() - stopped
        assert alerts[0]["labels"]["job"] == "api" and alerts[0]["labels"]["severity"] == "critical"
        # Only the stopped replica: the other one is still scraped.
        assert {a["labels"]["instance"] for a in target_down_alerts()} == {"api-1:9090"}
        assert query('up{job="api",instance="api-2:9090"} == 1')
    finally:
        started = time.monotonic()
        docker("start", name)
    record("API replica stopped: TargetDown firing in Prometheus (scrape 2 s, for 10 s)", f"{fired:.1f} s", "<= 60 s", fired <= 60)
    assert fired <= 60
    _, resolved = wait_for("TargetDown resolved", lambda: not target_down_alerts() or None, limit=180)
    resolved = time.monotonic() - started
    record("API replica started again: TargetDown resolved", f"{resolved:.1f} s", "<= 60 s", resolved <= 60)
    assert resolved <= 60
    wait_for("api-1 scraped again", lambda: query('up{job="api",instance="api-1:9090"} == 1'))


def test_no_changes_after_the_faults(stack):
    # The restarted replica must be healthy again before the engine looks at it.
    name = replica_container(1)
    wait_for("api-1 healthy", lambda: docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip() == "healthy", limit=120)
    res = stack.preview("--expect-no-changes")
    assert res.code == 0
