"""Summarise `pulumi refresh --preview-only --json`: which resources drifted, and how.

A refresh step is drift when the resource is gone (`delete`), or when what the provider reads
differs from the state (`update`, or a `refresh` step whose outputs changed). Used by scripts/drift.
Exit codes: 0 no drift, 2 drift, 1 the input was not a refresh preview.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Sequence

from .stateful_guard import load_preview

EXIT_OK, EXIT_BAD_INPUT, EXIT_DRIFT = 0, 1, 2

# Outputs that change on every read without anyone touching the resource.
VOLATILE_KEYS = frozenset({"containerLogs", "container_logs", "exitCode", "exit_code"})


@dataclass
class Drift:
    urn: str
    op: str
    changed: List[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.urn.rsplit("::", 1)[-1]

    def describe(self) -> str:
        if self.op == "delete":
            return f"{self.name}: gone (deleted outside Pulumi)  [{self.urn}]"
        what = ", ".join(self.changed) if self.changed else "properties"
        return f"{self.name}: changed outside Pulumi: {what}  [{self.urn}]"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out or {prefix: []}
    return {prefix: value}


def changed_paths(old: Mapping[str, Any], new: Mapping[str, Any]) -> List[str]:
    a, b = _flatten(dict(old or {})), _flatten(dict(new or {}))
    paths = [k for k in sorted(set(a) | set(b))
             if a.get(k) != b.get(k) and k.split(".")[0].split("[")[0] not in VOLATILE_KEYS]
    return paths


def classify(step: Mapping[str, Any]) -> Optional[Drift]:
    op = step.get("op", "")
    urn = str(step.get("urn", ""))
    if "pulumi:pulumi:Stack" in urn or "::pulumi:providers:" in urn:
        return None
    if op == "delete":
        return Drift(urn, op)
    diff = sorted((step.get("detailedDiff") or {}).keys()) or list(step.get("diffReasons") or [])
    old = (step.get("oldState") or {}).get("outputs") or {}
    new = (step.get("newState") or {}).get("outputs") or {}
    computed = changed_paths(old, new) if old and new else []
    if op in ("update", "replace") or diff:
        return Drift(urn, op, diff or computed)
    if op == "refresh" and computed:
        return Drift(urn, op, computed)
    return None


def find_drift(doc: Mapping[str, Any]) -> List[Drift]:
    seen: dict[str, Drift] = {}
    for step in doc.get("steps") or []:
        drift = classify(step)
        if drift and drift.urn not in seen:
            seen[drift.urn] = drift
    return list(seen.values())


def report(drifts: Sequence[Drift], stack: str = "") -> tuple[int, str]:
    where = f"stack {stack}" if stack else "the stack"
    if not drifts:
        return EXIT_OK, f"drift: none: {where} matches what runs."
    lines = [f"drift: DRIFT in {where}: {len(drifts)} resource(s) differ from the state:"]
    lines += [f"  - {d.describe()}" for d in drifts]
    lines.append("Either undo the manual change, or run `pulumi up` to put back what the program "
                 "declares (`pulumi refresh` accepts the change into the state instead).")
    return EXIT_DRIFT, "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("refresh_json", nargs="?", help="refresh --preview-only --json output (default stdin)")
    parser.add_argument("--stack", default="")
    args = parser.parse_args(argv)
    try:
        if args.refresh_json and args.refresh_json != "-":
            with open(args.refresh_json, encoding="utf-8") as fh:
                text = fh.read()
        else:
            text = sys.stdin.read()
        doc = load_preview(text)
    except (OSError, ValueError) as exc:
        print(f"drift: cannot read the refresh JSON: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    code, message = report(find_drift(doc), args.stack)
    print(message)
    return code


if __name__ == "__main__":
    sys.exit(main())
