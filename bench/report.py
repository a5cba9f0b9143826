"""The figures of a benchmark run as a markdown table (min / median / max per side, the ratios
against the targets) and a plot of the rollout; optionally into docs/benchmarks.md."""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path
from typing import Any, Callable

from .settings import REPO

DOCS = REPO / "docs" / "benchmarks.md"
DOCS_PNG = REPO / "docs" / "benchmarks-rollout.png"
BEGIN, END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"

# The targets (ratios to compose measured in the same run).
TARGETS = {
    "cold": 1.3,  # pulumi cold deploy <= 1.3 x compose
    "noop_up": 10.0,  # seconds
    "preview": 5.0,  # seconds
    "rollout": 1.5,  # pulumi rollout <= 1.5 x compose
    "nginx": 0.8,  # through nginx >= 80 % of direct throughput
}


def _get(d: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def values(results: dict, side: str, path: str) -> list[float]:
    out = []
    for run in results.get("runs", []):
        v = _get(run.get(side, {}), path)
        if isinstance(v, (int, float)):
            out.append(float(v))
    return out


def med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def fmt(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def cell(xs: list[float], digits: int = 1, missing: int = 0) -> str:
    if not xs:
        return "–" if not missing else f"not reached ({missing}×)"
    text = fmt(xs[0], digits) if len(xs) == 1 else " / ".join(fmt(v, digits) for v in (min(xs), med(xs), max(xs)))
    if missing:
        text += f" (+{missing}× not reached)"
    return text


def _missing(results: dict, side: str, path: str) -> int:
    """Runs where a duration was not reached (rollout never converged, scale never complete)."""
    if path not in ("rollout.seconds", "scale.seconds", "cold.seconds"):
        return 0
    n = 0
    for run in results.get("runs", []):
        s = run.get(side)
        if isinstance(s, dict) and "error" not in s and _get(s, path) is None and _get(s, path.split(".")[0]) is not None:
            n += 1
    return n


def _ok(flag: bool | None) -> str:
    return "–" if flag is None else ("met" if flag else "**missed**")


def table(results: dict) -> tuple[str, dict]:
    """The markdown table, and the medians and ratios it shows (for tests and the report)."""
    rows: list[str] = []
    summary: dict[str, Any] = {}
    n = len(results.get("runs", []))
    head = "min / median / max" if n > 1 else "one run"
    rows.append(f"| measure | docker compose ({head}) | pulumi up ({head}) | pulumi ÷ compose (medians) | target | |")
    rows.append("|---|---|---|---|---|---|")

    def row(label: str, path: str, *, digits: int = 1, ratio: bool = True, target: str = "", check: Callable | None = None,
            key: str | None = None, compose_path: str | None = None, pulumi_path: str | None = None) -> None:
        c = values(results, "compose", compose_path or path)
        p = values(results, "pulumi", pulumi_path or path)
        r = (med(p) / med(c)) if ratio and c and p and med(c) else None
        verdict = check(c, p, r) if check else None
        if key:
            summary[key] = {"compose": med(c), "pulumi": med(p), "ratio": r, "met": verdict}
        rows.append(
            f"| {label} | {cell(c, digits, _missing(results, 'compose', compose_path or path))} "
            f"| {cell(p, digits, _missing(results, 'pulumi', pulumi_path or path))} "
            f"| {fmt(r, 2) + '×' if r is not None else '–'} | {target} | {_ok(verdict)} |"
        )

    row("1. cold deploy → all healthy, /api/health 200 (s)", "cold.seconds", key="cold", target="≤ 1.3×",
        check=lambda c, p, r: None if r is None else r <= TARGETS["cold"])
    row("   … the deploy command alone (s)", "cold.command_seconds")
    row("   … floor: containers' own start→healthy, parallel (s)", "cold.floor.parallel")
    row("   … floor: the same, in the program's order (data + web, API, nginx) (s)", "cold.floor.program_order")
    row("2. no-op re-run: `up -d` / `pulumi up` (s)", "noop.up_seconds", key="noop_up", target="pulumi ≤ 10 s, 0 changes",
        check=lambda c, p, r: None if not p else (med(p) <= TARGETS["noop_up"] and not any(values(results, "pulumi", "noop.up_changes"))))
    row("   … resources / containers changed", "noop.up_changes", digits=0, ratio=False)
    row("   `pulumi preview` alone (s)", "noop.preview_seconds", ratio=False, key="preview", target="≤ 5 s, 0 changes",
        check=lambda c, p, r: None if not p else (med(p) <= TARGETS["preview"] and not any(values(results, "pulumi", "noop.preview_changes"))))
    row("   idle CPU of the running stack's containers (% of one core)", "idle.containers_pct", digits=2)
    row("   idle CPU of dockerd, containerd, shims (% of one core, whole engine)", "idle.daemons_pct", digits=1, ratio=False)
    row("3. rollout demo-1 → demo-2, 2 replicas, under load (s)", "rollout.seconds", key="rollout", target="≤ 1.5×",
        check=lambda c, p, r: None if r is None else r <= TARGETS["rollout"])
    row("   … the command alone (s)", "rollout.command_seconds")
    row("   requests served during the rollout", "rollout.served", digits=0, ratio=False)
    row("   requests failed during the rollout", "rollout.failed", digits=0, ratio=False, key="rollout_failed",
        target="pulumi: 0", check=lambda c, p, r: None if not p else max(p) == 0)
    row("   latency p50 during the rollout (ms)", "rollout.p50_ms")
    row("   latency p99 during the rollout (ms)", "rollout.p99_ms")
    row("4. scale API 1 → 3, until nginx serves all three (s)", "scale.seconds", key="scale")
    row("   … the command alone (s)", "scale.command_seconds")
    row("5. straight to one API replica (req/s)", "overhead.direct.rps", digits=0, key="direct")
    row("   through nginx, HTTPS (req/s)", "overhead.nginx.rps", digits=0, key="via_nginx")
    row("   nginx ÷ direct throughput", "overhead.ratio", digits=2, ratio=False, key="nginx", target="≥ 0.80 (≤ 20 % cost)",
        check=lambda c, p, r: None if not (c or p) else min(med(x) for x in (c, p) if x) >= TARGETS["nginx"])
    row("   p99 straight (ms)", "overhead.direct.p99_ms", digits=2, ratio=False)
    row("   p99 through nginx (ms)", "overhead.nginx.p99_ms", digits=2, ratio=False)
    row("   CPU per request through nginx: nginx (µs)", "overhead.cpu_us_per_request.nginx", ratio=False)
    row("   CPU per request through nginx: API (µs)", "overhead.cpu_us_per_request.api", ratio=False)
    row("   CPU per request through nginx: dockerd, access log (µs)", "overhead.cpu_us_per_request.dockerd", ratio=False)
    row("   CPU per request straight: API (µs)", "overhead.cpu_us_per_request_direct.api", ratio=False)
    host = values(results, "compose", "overhead.host_ports.ratio")
    if host:
        hd, hn = values(results, "compose", "overhead.host_ports.direct.rps"), values(results, "compose", "overhead.host_ports.nginx.rps")
        rows.append(f"|   via the published 127.0.0.1 ports (docker-proxy in both paths): straight (req/s) | {cell(hd, 0)} | – | – | | |")
        rows.append(f"|   … through nginx (req/s) | {cell(hn, 0)} | – | – | | |")
        rows.append(f"|   … nginx ÷ direct | {cell(host, 2)} | – | – | | |")
    row("teardown: `down -v` / `pulumi destroy` (s)", "teardown.seconds")
    return "\n".join(rows), summary


def where_time_goes(results: dict) -> str:
    """The median pulumi cold deploy's steps, and every side's containers' start→healthy."""
    lines: list[str] = []
    runs = [r for r in results.get("runs", []) if isinstance(r.get("pulumi"), dict) and "cold" in r["pulumi"]]
    if runs:
        runs.sort(key=lambda r: r["pulumi"]["cold"]["seconds"])
        cold = runs[len(runs) // 2]["pulumi"]["cold"]
        lines.append(f"Median `pulumi up` cold deploy ({cold['seconds']} s): the engine's steps (event log, seconds after the command started) "
                     "and the containers' own start→healthy (`docker events`):\n")
        lines.append("| resource | op | start | end | took |")
        lines.append("|---|---|---|---|---|")
        for s in cold.get("steps", []):
            took = (s.get("end") or 0) - s["start"]
            if s["type"].startswith(("docker:index/container", "command:")) or took >= 1.0 or not s["type"]:
                lines.append(f"| {('`' + s['name'] + '` (' + s['type'].split(':')[-1] + ')') if s['type'] else s['name']} | {s['op']} | {s['start']:.1f} | {fmt(s.get('end'))} | {took:.1f} |")
        lines.append("")
    runs = [r for r in results.get("runs", []) if isinstance(r.get("pulumi"), dict) and _get(r["pulumi"], "rollout.seconds")]
    if runs:
        runs.sort(key=lambda r: r["pulumi"]["rollout"]["seconds"])
        ro = runs[len(runs) // 2]["pulumi"]["rollout"]
        healthy = [c["healthy"] for c in ro.get("containers", []) if c.get("service") == "api" and "healthy" in c]
        lines.append(f"Median `pulumi up` rollout ({ro['seconds']} s; `docker events`: the new replicas were healthy "
                     f"{fmt(max(healthy)) if healthy else '–'} s after the command started):\n")
        lines.append("| resource | op | start | end | took |")
        lines.append("|---|---|---|---|---|")
        for s in ro.get("steps", []):
            took = (s.get("end") or 0) - s["start"]
            if s["type"].startswith(("docker:index/container", "command:")) or not s["type"]:
                name = ('`' + s['name'] + '` (' + s['type'].split(':')[-1] + ')') if s['type'] else s['name']
                lines.append(f"| {name} | {s['op']} | {s['start']:.1f} | {fmt(s.get('end'))} | {took:.1f} |")
        lines.append("")
    noop = [r["pulumi"]["noop"] for r in results.get("runs", []) if isinstance(r.get("pulumi"), dict) and "noop" in r["pulumi"]]
    if noop and "preview_first_resource" in noop[0]:
        def m(k: str) -> str:
            return fmt(med([n[k] for n in noop if isinstance(n.get(k), (int, float))]))
        lines.append(f"No-op (medians): `pulumi up` {m('up_seconds')} s, of which the CLI, language host and program took "
                     f"{m('up_first_resource')} s to register the first resource and the engine was done at {m('up_last_event')} s; "
                     f"`pulumi preview` {m('preview_seconds')} s (first resource {m('preview_first_resource')} s, done {m('preview_last_event')} s).\n")
    for side in ("compose", "pulumi"):
        by = {}
        for run in results.get("runs", []):
            for k, v in (_get(run.get(side, {}), "cold.floor.by_service") or {}).items():
                by.setdefault(k, []).append(v)
        if by:
            parts = ", ".join(f"{k} {fmt(med(v))}" for k, v in sorted(by.items()))
            lines.append(f"- {side}: containers' start→healthy in the cold deploy (median s): {parts}")
    return "\n".join(lines)


def machine_block(results: dict) -> str:
    m = results.get("meta", {})
    s = results.get("settings", {})
    loads = []
    for run in results.get("runs", []):
        for side in run.get("order", []):
            lb = _get(run.get(side, {}), "load_before")
            if lb:
                loads.append(lb[0])
    patches = s.get("variant") or []
    if isinstance(patches, str):
        patches = [patches]
    variant = ("\n- **variant**: the program with " + " and ".join(f"`{p}`" for p in patches)
               + " applied (both sides)") if patches else ""
    return (
        f"- date: {m.get('date')}, commit {m.get('git')}; {s.get('runs')} run(s) per side"
        + (" (--quick)" if s.get("quick") else "") + f", wall time {fmt(m.get('wall_seconds'), 0)} s\n"
        f"- machine: {m.get('os')}, kernel {m.get('kernel')}, {m.get('cores')} cores ({m.get('cpu')}), {m.get('memory_gib')} GiB\n"
        f"- load average (1 min) at start {m.get('load_start', ['?'])[0]}, before each side "
        f"{', '.join(fmt(x, 1) for x in loads) or '–'}, at end {fmt((m.get('load_end') or [None])[0])} (the machine is shared: figures are noisy)\n"
        f"- Docker {m.get('docker')}; compose: {m.get('compose')}; Pulumi {m.get('pulumi')}; {m.get('wrk')}\n"
        f"- wrk: overhead {s.get('overhead_rounds', 1)} alternating runs of {s.get('wrk_seconds')} s per path, 2 threads, 16 keep-alive connections; rollout load "
        f"{s.get('rollout_connections')} connections, a new TLS connection per request, {s.get('rollout_delay_ms')} ms pause between requests"
        + variant
    )


def errors_block(results: dict) -> str:
    out = []
    for i, run in enumerate(results.get("runs", []), 1):
        for side in ("compose", "pulumi"):
            s = run.get(side)
            if isinstance(s, dict) and "error" in s:
                out.append(f"- run {i}, {side}: failed: `{s['error'].splitlines()[0][:300]}`")
            elif isinstance(s, dict) and _get(s, "rollout.recovered_by_reload"):
                out.append(f"- run {i}, {side}: nginx kept sending to the replaced replicas' old addresses; "
                           "the rollout never converged within 90 s and was ended by an `nginx -s reload`")
    return "\n".join(out)


def plot(results: dict, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = [s for s in ("compose", "pulumi") if any(isinstance(r.get(s), dict) and "rollout" in r[s] for r in results.get("runs", []))]
    if not sides:
        return None
    fig, axes = plt.subplots(len(sides), 1, figsize=(10, 3.3 * len(sides)), sharex=True, squeeze=False)
    for ax, side in zip(axes[:, 0], sides):
        runs = [r[side]["rollout"] for r in results["runs"] if isinstance(r.get(side), dict) and "rollout" in r[side]]
        runs.sort(key=lambda r: (r["seconds"] is None, r["seconds"] or 0))
        ro = runs[len(runs) // 2]
        t0 = ro["start_unix"]
        secs = sorted(int(k) for k in ro["timeline"])
        xs = [s - int(t0) for s in secs]
        get = lambda s, k: ro["timeline"][str(s)].get(k, 0)  # noqa: E731
        v1 = [get(s, "v:demo-1") for s in secs]
        v2 = [get(s, "v:demo-2") for s in secs]
        bad = [get(s, "bad") for s in secs]
        ax.bar(xs, v1, width=1.0, align="edge", color="#4C72B0", label="200 from demo-1")
        ax.bar(xs, v2, width=1.0, align="edge", bottom=v1, color="#55A868", label="200 from demo-2")
        ax.bar(xs, bad, width=1.0, align="edge", bottom=[a + b for a, b in zip(v1, v2)], color="#C44E52", label="failed (HTTP)")
        ax.axvline(0, color="black", ls="--", lw=1)
        end = ro["command_end_unix"] - t0
        ax.axvline(end, color="grey", ls=":", lw=1)
        if ro["seconds"]:
            ax.axvline(ro["seconds"], color="black", ls="-", lw=1)
        sock = sum((ro.get("failed_socket") or {}).get(k, 0) for k in ("connect", "read", "write", "timeout"))
        title = {"compose": "docker compose: `up -d --no-deps api` (plan §8.2)", "pulumi": "pulumi up (new replicas healthy, nginx reloaded, old removed)"}[side]
        done = f"done after {ro['seconds']:.0f} s" if ro["seconds"] else "not converged in 90 s"
        ax.set_title(f"{title}: {done}; {ro['served']} served, {ro['failed']} failed ({sock} without an HTTP answer)", fontsize=9)
        ax.set_ylabel("requests / s")
        ax.legend(loc="lower left", fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    axes[-1, 0].set_xlabel("seconds after the rollout command started (dashed: start, dotted: command returned, solid: rollout done)")
    fig.suptitle("API rollout demo-1 → demo-2 (2 replicas) under steady load through nginx", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_markdown(results: dict, png_name: str) -> tuple[str, dict]:
    tbl, summary = table(results)
    parts = [
        "### Machine and run\n", machine_block(results), "",
        "### Figures\n", tbl, "",
    ]
    errs = errors_block(results)
    if errs:
        parts += ["Notes from this run:\n", errs, ""]
    parts += [f"![rollout under load: requests per second and failures, both sides]({png_name})", "",
              "### Where the time goes\n", where_time_goes(results), ""]
    return "\n".join(parts), summary


def write_report(results: dict, outdir: Path, docs: bool = False) -> dict:
    outdir.mkdir(parents=True, exist_ok=True)
    png = plot(results, outdir / "rollout.png")
    text, summary = render_markdown(results, "rollout.png")
    (outdir / "benchmarks.md").write_text(text)
    (outdir / "summary.json").write_text(__import__("json").dumps(summary, indent=1))
    if docs:
        doc_text, _ = render_markdown(results, DOCS_PNG.name)
        current = DOCS.read_text() if DOCS.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
        if BEGIN not in current or END not in current:
            current += f"\n{BEGIN}\n{END}\n"
        head, rest = current.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        DOCS.write_text(f"{head}{BEGIN}\n{doc_text}\n{END}{tail}")
        if png:
            shutil.copy(png, DOCS_PNG)
    return summary


COMPARED = [
    ("cold deploy (s)", "cold.seconds"),
    ("no-op `up -d` / `pulumi up` (s)", "noop.up_seconds"),
    ("`pulumi preview` (s)", "noop.preview_seconds"),
    ("rollout under load (s)", "rollout.seconds"),
    ("rollout: failed requests", "rollout.failed"),
    ("scale 1 → 3 (s)", "scale.seconds"),
]


def compare(named: list[tuple[str, dict]]) -> str:
    """Medians of the deploy figures of several result sets side by side (scripts/bench --compare)."""
    head = "| measure (medians) | " + " | ".join(f"{n}: compose | {n}: pulumi | ratio" for n, _ in named) + " |"
    rows = [head, "|---|" + "---|---|---|" * len(named)]
    for label, path in COMPARED:
        cells = []
        for _, res in named:
            c, p = med(values(res, "compose", path)), med(values(res, "pulumi", path))
            r = f"{p / c:.2f}×" if c and p is not None and path != "rollout.failed" else "–"
            cells += [fmt(c, 0 if path == "rollout.failed" else 1), fmt(p, 0 if path == "rollout.failed" else 1), r]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
