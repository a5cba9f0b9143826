"""scripts/bench: the plan's docker compose and `pulumi up` side by side on this machine.

  scripts/bench                 N=3 runs per side; writes build/bench/ and updates docs/benchmarks.md
  scripts/bench --quick         one run per side, shorter wrk runs (CI: checks the benchmark works)
  scripts/bench --runs 5        more runs
  scripts/bench --render        only write the compose file (bench/generated/docker-compose.yml)
  scripts/bench --variant P     measure a proposed program change: patch P applied to the bench's
                                copies of the program (both sides), never to the repo
  scripts/bench --report DIR    rebuild the table and plot from DIR/results.json
  scripts/bench --compare DIR…  the medians of several runs side by side (e.g. with and without a variant)

Options: --out DIR (default build/bench, or build/bench-quick with --quick), --docs / --no-docs
(update docs/benchmarks.md and docs/benchmarks-rollout.png; default: on for full runs, off
with --quick), --sides compose,pulumi.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

from tests.support import copy_project

from .patching import apply_patch
from .settings import COMPOSE, PULUMI, REPO


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one run per side, short wrk runs")
    ap.add_argument("--runs", type=int, default=None, help="runs per side (default 3, --quick 1)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--docs", dest="docs", action="store_true", default=None)
    ap.add_argument("--no-docs", dest="docs", action="store_false")
    ap.add_argument("--sides", default="compose,pulumi")
    ap.add_argument("--render", action="store_true")
    ap.add_argument("--report", type=Path, default=None, metavar="DIR")
    ap.add_argument("--compare", type=Path, nargs="+", default=None, metavar="DIR",
                    help="print the medians of several runs' results.json side by side")
    ap.add_argument("--variant", type=Path, action="append", default=None, metavar="PATCH",
                    help="apply this patch to the bench's copies of the program (repeatable)")
    args = ap.parse_args(argv)

    from . import compose

    if args.render:
        return compose.main(["compose"])

    from .report import write_report

    if args.compare:
        from .report import compare

        print(compare([(d.name, json.loads((d / "results.json").read_text())) for d in args.compare]))
        return 0
    if args.report:
        results = json.loads((args.report / "results.json").read_text())
        write_report(results, args.report, docs=bool(args.docs))
        return 0

    runs = args.runs or (1 if args.quick else 3)
    if runs < 1:
        ap.error("--runs must be at least 1")
    outdir = (args.out or (REPO / "build" / ("bench-quick" if args.quick else "bench"))).resolve()
    docs = (not args.quick and not args.variant) if args.docs is None else args.docs
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if not set(sides) <= {"compose", "pulumi"} or not sides:
        ap.error("--sides: compose, pulumi or both")

    variant = [p.resolve() for p in args.variant] if args.variant else []
    if variant:
        # A patched copy of the program; the compose file is rendered from it in a fresh process.
        src = _patched_copy(variant, outdir.parent / f"{outdir.name}-variant-src")
        render = subprocess.run([sys.executable, "-m", "bench.compose", "--project", str(src)],
                                cwd=REPO, capture_output=True, text=True)
        if render.returncode != 0:
            print(render.stdout + render.stderr, file=sys.stderr)
            return 1
    else:
        # The plan's compose file, from the program of this commit (never a stale copy).
        compose.write(compose.render_compose())

    from .machine import machine_facts
    from .run import Runner, log
    from .sides import ComposeSide, PulumiSide, remove_leftovers

    if outdir.exists():
        shutil.rmtree(outdir)
    outdir.mkdir(parents=True)
    started = time.monotonic()
    wrk_seconds, rounds = (2, 2) if args.quick else (3, 4)
    results: dict = {
        "meta": machine_facts(),
        "settings": {"runs": runs, "quick": args.quick, "wrk_seconds": wrk_seconds, "overhead_rounds": rounds,
                     "variant": [str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p) for p in variant] or None,
                     "rollout_connections": 4, "rollout_delay_ms": 10, "sides": sides},
        "runs": [],
    }
    for prefix in (COMPOSE.name_prefix, PULUMI.name_prefix):
        left = remove_leftovers(prefix)
        if left:
            log(f"removed leftovers of an earlier run: {', '.join(left)}")

    side_objs = {}
    if "compose" in sides:
        side_objs["compose"] = ComposeSide(outdir / "compose")
        results["meta"]["compose"] = side_objs["compose"].version
    if "pulumi" in sides:
        side_objs["pulumi"] = PulumiSide(outdir / "pulumi", patches=variant)
        results["meta"]["pulumi"] = side_objs["pulumi"].version
    log(f"{runs} run(s) per side; compose: {results['meta'].get('compose', '-')}; load {results['meta']['load_start']}")

    code = 0
    try:
        for i in range(runs):
            order = sides if i % 2 == 0 else list(reversed(sides))  # alternate: drift hits both alike
            run: dict = {"order": order}
            for key in order:
                log(f"run {i + 1}/{runs}: {key}")
                runner = Runner(side_objs[key], outdir, wrk_seconds=wrk_seconds, rounds=rounds,
                                rollout_connections=results["settings"]["rollout_connections"],
                                rollout_delay_ms=results["settings"]["rollout_delay_ms"])
                try:
                    run[key] = runner.sequence()
                except Exception as exc:  # noqa: BLE001 - record it, clean up, go on with the other side
                    code = 1
                    run[key] = {"error": f"{type(exc).__name__}: {exc}"[:4000]}
                    log(f"{key} failed:\n{traceback.format_exc()[-4000:]}")
                    _cleanup(side_objs[key], key)
            results["runs"].append(run)
            (outdir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    finally:
        for key, side in side_objs.items():
            _cleanup(side, key, quiet=True)
        results["meta"]["load_end"] = list(__import__("os").getloadavg())
        results["meta"]["wall_seconds"] = round(time.monotonic() - started, 1)
        (outdir / "results.json").write_text(json.dumps(results, indent=1, default=str))

    write_report(results, outdir, docs=docs)
    log(f"done in {results['meta']['wall_seconds']:.0f} s: {outdir / 'benchmarks.md'}" + (" and docs/benchmarks.md" if docs else ""))
    return code


def _patched_copy(patches: list[Path], dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    copy_project(dest)
    for patch in patches:
        apply_patch(patch, dest)
    return dest


def _cleanup(side, key: str, quiet: bool = False) -> None:
    from .sides import remove_leftovers

    try:
        side.teardown()
    except Exception as exc:  # noqa: BLE001
        if not quiet:
            print(f"teardown of {key} failed: {exc}", file=sys.stderr)
    remove_leftovers(side.side.name_prefix)
    side.reset()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
