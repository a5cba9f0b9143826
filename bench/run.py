"""One benchmark run per side: cold deploy, no-op, nginx overhead, scale 1->3, rollout, teardown.

What is timed, for both sides alike (docs/benchmarks.md, "Method"):
- cold deploy: from the deploy command's start until every container is healthy and
  `https://localhost/api/health` answers 200 through nginx (compose also runs the plan's
  §7.2 migration step in that time; the program runs its own inside `pulumi up`);
- no-op: the deploy command again with nothing changed (and `pulumi preview` alone);
- nginx overhead: wrk flat out for the same time and concurrency, straight to one API replica
  and through nginx over HTTPS, both measured inside the containers' own network namespaces
  (127.0.0.1, no docker-proxy in either path); compose also through the published host ports;
- scale 1 -> 3: from the command's start until nginx has served from all three replicas;
- rollout demo-1 -> demo-2 with 2 replicas under a steady wrk load through nginx: from the
  command's start until the command returned, both new replicas are healthy and nginx serves
  only demo-2; requests served and failed over the load window (2 s before to 2 s after);
- teardown: `docker-compose down -v` / `pulumi destroy`.
"""

from __future__ import annotations

import time
import statistics
from pathlib import Path

from .measure import (
    DockerEvents, Probe, WrkTimeline, all_healthy, api_containers, containers, cpu_ns, docker, loadavg, netns,
    process_cpu_ns,
    wait_for, wrk_throughput,
)
from .settings import DEMO_2, VERSION_2
from .sides import ComposeSide, PulumiSide, SideError, Timed

EXPECT_1 = {"postgres": 1, "redis": 1, "minio": 1, "api": 1, "web": 1, "nginx": 1}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Runner:
    def __init__(self, side: ComposeSide | PulumiSide, outdir: Path, *, wrk_seconds: int, rounds: int,
                 rollout_connections: int, rollout_delay_ms: int):
        self.side = side
        self.outdir = outdir
        self.wrk_seconds, self.rounds = wrk_seconds, rounds
        self.idle_seconds = 20.0 if rounds > 2 else 8.0
        self.rollout_connections, self.rollout_delay_ms = rollout_connections, rollout_delay_ms
        self.https = side.side.https_port
        self.network = side.network

    # -- helpers ------------------------------------------------------------------------------------

    def _serving(self) -> bool:
        return Probe(self.https, timeout=3).once().ok

    def _wait_healthy_and_serving(self, expect: dict[str, int], timeout: float = 240) -> float | None:
        return wait_for(lambda: all_healthy(self.network, expect) and self._serving(), timeout, interval=0.25)

    # -- the operations -----------------------------------------------------------------------------

    def cold_deploy(self) -> dict:
        with DockerEvents(self.side.stack_label) as events:
            wall0 = time.time()
            cmd = self.side.deploy()
            migrate = None
            if isinstance(self.side, ComposeSide):
                # Plan §7.1: wait for healthy (`docker-compose ps | grep healthy`), then §7.2.
                wait_for(lambda: all_healthy(self.network, EXPECT_1), 240, interval=0.25)
                migrate = self.side.migrate()
            done = self._wait_healthy_and_serving(EXPECT_1)
        if done is None:
            raise SideError(f"{self.side.key}: the stack did not become healthy and serving after the deploy")
        rows = events.start_to_healthy(wall0)
        return {
            "seconds": round(done - cmd.started, 2),
            "command_seconds": round(cmd.seconds, 2),
            "migrate_seconds": round(migrate.seconds, 2) if migrate else None,
            "containers": rows,
            "floor": floors(rows),
            "steps": cmd.steps,
            "changes": cmd.changes,
        }

    def noop(self) -> dict:
        up = self.side.deploy()
        out = {"up_seconds": round(up.seconds, 2), "up_changes": up.changes}
        if isinstance(self.side, PulumiSide):
            pv = self.side.preview()
            out.update(preview_seconds=round(pv.seconds, 2), preview_changes=pv.changes,
                       up_first_resource=up.first_resource, up_last_event=up.last_event,
                       preview_first_resource=pv.first_resource, preview_last_event=pv.last_event)
        return out

    def idle_cpu(self, seconds: float) -> dict:
        """CPU the running stack uses while nothing happens: mostly its healthchecks (each one a
        process started in the container through dockerd, containerd and runc). Containers'
        cgroups are this stack's alone; the daemons' share includes every other stack on the
        engine, so it is noisier."""
        ids = [c["Id"] for c in containers(self.network) if c["State"]["Status"] == "running"]
        daemons = ("dockerd", "containerd", "containerd-shim", "runc")

        def sample() -> tuple[int, int]:
            return sum(cpu_ns(i) for i in ids), sum(process_cpu_ns(n) for n in daemons)

        c0, d0 = sample()
        time.sleep(seconds)
        c1, d1 = sample()
        return {"containers_pct": round((c1 - c0) / 1e9 / seconds * 100, 2),
                "daemons_pct": round((d1 - d0) / 1e9 / seconds * 100, 2), "seconds": seconds}

    def nginx_overhead(self) -> dict:
        """Straight to one replica and through nginx, in alternating short wrk runs (`rounds` of
        each, `wrk_seconds` long): on a shared 2-core machine the background load changes from
        minute to minute, so each pair is measured close together and the ratio is the median of
        the pairs' ratios. CPU per request (cgroup counters) is the steadier figure."""
        (api,) = api_containers(self.network)[:1]
        nginx_id = docker("inspect", "-f", "{{.Id}}", f"{self.side.side.name_prefix}-nginx").stdout.strip()

        def cpu() -> dict[str, int]:
            return {"nginx": cpu_ns(nginx_id), "api": cpu_ns(api["Id"]), "dockerd": process_cpu_ns("dockerd")}

        def pairs(direct_fn, via_fn) -> dict:
            direct, via, spent = [], [], {"nginx": 0, "api": 0, "dockerd": 0}
            api_direct = 0
            for _ in range(self.rounds):
                c0 = cpu()
                direct.append(direct_fn())
                c1 = cpu()
                via.append(via_fn())
                c2 = cpu()
                api_direct += c1["api"] - c0["api"]
                for k in spent:
                    spent[k] += c2[k] - c1[k]
            n_via = sum(r.requests for r in via)
            n_direct = sum(r.requests for r in direct)
            ratios = sorted(v.rps / d.rps for d, v in zip(direct, via) if d.rps)
            out = {"direct": _agg(direct), "nginx": _agg(via),
                   "ratio": round(statistics.median(ratios), 3) if ratios else None,
                   "ratios": [round(r, 3) for r in ratios]}
            if n_via:
                out["cpu_us_per_request"] = {k: round(v / 1000 / n_via, 1) for k, v in spent.items()}
            if n_direct:
                out["cpu_us_per_request_direct"] = {"api": round(api_direct / 1000 / n_direct, 1)}
            return out

        secs = self.wrk_seconds
        out = pairs(
            lambda: wrk_throughput("http://127.0.0.1:3000/health", secs, prefix=netns(api["Id"])),
            lambda: wrk_throughput("https://127.0.0.1:443/api/health", secs, prefix=netns(nginx_id), host="localhost"),
        )
        if isinstance(self.side, ComposeSide):
            # The literal form: the API's own published 127.0.0.1 port vs nginx's.
            host_port = int(api["NetworkSettings"]["Ports"]["3000/tcp"][0]["HostPort"])
            out["host_ports"] = pairs(
                lambda: wrk_throughput(f"http://127.0.0.1:{host_port}/health", secs),
                lambda: wrk_throughput(f"https://127.0.0.1:{self.https}/api/health", secs, host="localhost"),
            )
        return out

    def scale(self, n: int) -> dict:
        with Probe(self.https, period=0.05) as probe:
            t0 = time.monotonic()
            cmd = self.side.scale(n)

            def seen_all() -> float | None:
                current = {c["Id"][:12] for c in api_containers(self.network)}
                first: dict[str, float] = {}
                for s in probe.since(t0):
                    if s.ok and s.instance in current:
                        first.setdefault(s.instance, s.end)
                return max(first.values()) if len(current) == n and set(first) == current else None

            wait_for(lambda: seen_all() is not None, 60, interval=0.25)
            all_at = seen_all()
            failures = probe.failures(t0)
        return {
            "seconds": round(all_at - t0, 2) if all_at else None,
            "command_seconds": round(cmd.seconds, 2),
            "probe_failures": len(failures),
            "steps": cmd.steps,
        }

    def rollout(self) -> dict:
        wrk_out = self.outdir / f"wrk-rollout-{self.side.key}.json"
        url = f"https://127.0.0.1:{self.https}/api/health"
        replicas = self.side.replicas
        new_id = docker("image", "inspect", "-f", "{{.Id}}", DEMO_2).stdout.strip()  # pulumi runs images by id
        recovered_by_reload = False
        with DockerEvents(self.side.stack_label) as events, Probe(self.https, period=0.1) as probe, \
                WrkTimeline(url, wrk_out, connections=self.rollout_connections, delay_ms=self.rollout_delay_ms) as load:
            time.sleep(2)
            wall0, t0 = time.time(), time.monotonic()
            cmd = self.side.rollout(DEMO_2)

            def new_replicas_healthy() -> bool:
                cs = api_containers(self.network)
                return len(cs) == replicas and all(
                    c["Image"] == new_id and (c["State"].get("Health") or {}).get("Status") == "healthy" for c in cs
                )

            healthy_at = wait_for(new_replicas_healthy, 120, interval=0.25)
            streak_from = None

            def converged() -> bool:
                nonlocal streak_from
                recent = [s for s in probe.since(t0)]
                streak_from = None
                for s in reversed(recent):
                    if s.ok and s.version == VERSION_2:
                        streak_from = s.start
                    else:
                        break
                return streak_from is not None and time.monotonic() - streak_from >= 2.0

            conv_at = wait_for(converged, 90, interval=0.25) if healthy_at else None
            if conv_at is None and isinstance(self.side, ComposeSide):
                # nginx still sends to addresses resolved before the recreate: the plan has no
                # step for this; reload so the next measurements start from a working site.
                self.side.reload_nginx()
                recovered_by_reload = True
            time.sleep(2)
        done_at = max(cmd.ended, healthy_at or 0, streak_from or 0) if conv_at else None
        rows = events.start_to_healthy(wall0)
        new_healthy = [r["healthy"] for r in rows if r["service"] == "api" and "healthy" in r]
        res = load.result
        seconds = res.get("seconds", {})
        ok = sum(v.get("ok", 0) for v in seconds.values())
        bad = sum(v.get("bad", 0) for v in seconds.values())
        errors = res.get("errors", {})
        socket_errors = sum(errors.get(k, 0) for k in ("connect", "read", "write", "timeout"))
        lat = res.get("latency_us", {})
        return {
            "seconds": round(done_at - t0, 2) if done_at else None,
            "command_seconds": round(cmd.seconds, 2),
            "healthy_after": round(max(new_healthy), 2) if new_healthy else None,  # docker events
            "recovered_by_reload": recovered_by_reload,
            "served": ok,
            "failed": bad + socket_errors,
            "failed_http": bad,
            "failed_socket": errors,
            "p50_ms": round(lat.get("p50", 0) / 1000, 1),
            "p99_ms": round(lat.get("p99", 0) / 1000, 1),
            "window_seconds": round(res.get("duration_us", 0) / 1e6, 1),
            "start_unix": wall0,
            "command_end_unix": wall0 + (cmd.ended - t0),
            "timeline": seconds,
            "probe_failures": [f"{s.start - t0:.1f}s {s.status or s.error}" for s in probe.failures(t0)][:20],
            "containers": rows,
            "steps": cmd.steps,
        }

    def teardown(self) -> dict:
        cmd = self.side.teardown()
        return {"seconds": round(cmd.seconds, 2)}

    def sequence(self) -> dict:
        out: dict = {"load_before": loadavg()}
        log(f"{self.side.key}: cold deploy")
        out["cold"] = self.cold_deploy()
        log(f"{self.side.key}: cold deploy {out['cold']['seconds']} s; no-op re-run")
        out["noop"] = self.noop()
        out["idle"] = self.idle_cpu(self.idle_seconds)
        log(f"{self.side.key}: idle CPU {out['idle']}; no-op {out['noop']}; nginx overhead ({self.rounds} x {self.wrk_seconds} s per path)")
        out["overhead"] = self.nginx_overhead()
        log(f"{self.side.key}: nginx/direct = {out['overhead']['ratio']}; scale 1 -> 3")
        out["scale"] = self.scale(3)
        log(f"{self.side.key}: scale 1 -> 3 {out['scale']['seconds']} s; scale 3 -> 2 (set-up for the rollout)")
        out["scale_down"] = self.scale(2)
        log(f"{self.side.key}: rollout demo-1 -> demo-2 under load")
        out["rollout"] = self.rollout()
        r = out["rollout"]
        log(f"{self.side.key}: rollout {r['seconds']} s, {r['served']} served, {r['failed']} failed; teardown")
        out["teardown"] = self.teardown()
        self.side.reset()
        out["load_after"] = loadavg()
        return out


def _agg(rs: list) -> dict:
    """Several wrk runs of one path: median rate and latencies, summed counts."""
    return {
        "rps": round(statistics.median(r.rps for r in rs), 1),
        "rps_each": [round(r.rps, 1) for r in rs],
        "requests": sum(r.requests for r in rs),
        "p50_ms": round(statistics.median(r.p50_ms for r in rs), 2),
        "p99_ms": round(statistics.median(r.p99_ms for r in rs), 2),
        "errors": sum(r.errors for r in rs),
        "non2xx": sum(r.non2xx for r in rs),
    }


def floors(rows: list[dict]) -> dict:
    """What the containers' own start-to-healthy times allow (the physical floor):
    - parallel: the data services, then the API, then web/nginx checked alongside it (what
      compose's ordering can reach: web and nginx start as soon as the API has started);
    - program_order: the program's dependency order, each step waiting for the previous one
      healthy: the data services with web beside them, then the API, then nginx."""
    by: dict[str, float] = {}
    for r in rows:
        if "start_to_healthy" in r:
            by[r["service"]] = max(by.get(r["service"], 0.0), r["start_to_healthy"])
    return floors_from(by)


def floors_from(by: dict[str, float]) -> dict:
    if not all(k in by for k in ("postgres", "redis", "minio", "api", "web", "nginx")):
        return {"by_service": {k: round(v, 2) for k, v in sorted(by.items())}, "parallel": None, "program_order": None}
    data = max(by[s] for s in ("postgres", "redis", "minio"))
    api, web, nginx = by["api"], by["web"], by["nginx"]
    return {
        "by_service": {k: round(v, 2) for k, v in sorted(by.items())},
        "parallel": round(data + max(api, web, nginx), 2),
        "program_order": round(max(data, web) + api + nginx, 2),
    }


__all__ = ["Runner", "Timed", "log"]
