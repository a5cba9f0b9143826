"""Find steps in `pulumi preview --json` output that would replace or delete stateful resources.

Stateful means losing it loses data or breaks a credential that something initialised once:
- data volumes (`docker:index/volume:Volume` labelled `ai-meeting.data=true`),
- generated secrets (RandomPassword and friends: PostgreSQL reads its password only at first init),
- anything already `protect`ed in the state,
- the PostgreSQL container when its data mount (`volumes`/`mounts`) changes: a new mount means an
  empty database even though the old volume survives.

Used by scripts/guard-stateful:  pulumi preview --json | python -m ai_meeting_policy.stateful_guard
Exit codes: 0 nothing stateful at risk (or all allowed), 3 blocked, 2 the input was not a preview.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterable, List, Mapping, Optional, Sequence

from .rules import CONTAINER, LABEL_DATA, LABEL_SERVICE, VOLUME, labels_of

EXIT_OK, EXIT_BAD_INPUT, EXIT_BLOCKED = 0, 2, 3

DESTRUCTIVE_OPS = frozenset({
    "replace", "create-replacement", "delete-replaced", "delete",
    "discard-replaced", "import-replacement",
})
SECRET_TYPES = frozenset({
    "random:index/randomPassword:RandomPassword",
    "random:index/randomBytes:RandomBytes",
    "random:index/randomString:RandomString",
})
DATA_MOUNT_KEYS = ("volumes", "mounts")


@dataclass(frozen=True)
class Finding:
    urn: str
    op: str
    kind: str     # data volume | secret | protected resource | postgres data mount
    detail: str

    @property
    def name(self) -> str:
        return self.urn.rsplit("::", 1)[-1]

    @property
    def type(self) -> str:
        parts = self.urn.split("::")
        return parts[2].rsplit("$", 1)[-1] if len(parts) > 3 else ""

    def describe(self) -> str:
        return f"{self.op:<16} {self.kind:<20} {self.name}  ({self.urn}){': ' + self.detail if self.detail else ''}"


def _state_props(state: Optional[Mapping[str, Any]]) -> Mapping[str, Any]:
    if not state:
        return {}
    return state.get("inputs") or state.get("outputs") or {}


def _type_of(step: Mapping[str, Any]) -> str:
    for key in ("newState", "oldState"):
        state = step.get(key) or {}
        if state.get("type"):
            return state["type"]
    parts = str(step.get("urn", "")).split("::")
    return parts[2].rsplit("$", 1)[-1] if len(parts) > 3 else ""


def _labels(step: Mapping[str, Any]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for key in ("oldState", "newState"):  # new wins, but an old label still counts
        merged.update(labels_of(_state_props(step.get(key))))
    return merged


def _changed_keys(step: Mapping[str, Any]) -> set[str]:
    keys = set(step.get("diffReasons") or []) | set(step.get("replaceReasons") or [])
    keys |= {k.split(".")[0].split("[")[0] for k in (step.get("detailedDiff") or {})}
    return keys


def _data_mount_changed(step: Mapping[str, Any]) -> bool:
    if _changed_keys(step) & set(DATA_MOUNT_KEYS):
        return True
    old, new = _state_props(step.get("oldState")), _state_props(step.get("newState"))
    if not old or not new:
        return False
    return any(old.get(k) != new.get(k) for k in DATA_MOUNT_KEYS)


def classify(step: Mapping[str, Any]) -> Optional[Finding]:
    """A Finding when this step puts a stateful resource at risk, else None."""
    op = step.get("op", "")
    urn = str(step.get("urn", ""))
    rtype = _type_of(step)
    labels = _labels(step)
    reasons = ", ".join(sorted(_changed_keys(step)))
    detail = f"changes {reasons}" if reasons else ""
    if op in DESTRUCTIVE_OPS:
        if rtype == VOLUME and labels.get(LABEL_DATA) == "true":
            return Finding(urn, op, "data volume", detail)
        if rtype in SECRET_TYPES:
            return Finding(urn, op, "secret", detail)
        if (step.get("oldState") or {}).get("protect"):
            return Finding(urn, op, "protected resource", detail)
    if (rtype == CONTAINER and labels.get(LABEL_SERVICE) == "postgres"
            and op in DESTRUCTIVE_OPS | {"update"} and op != "delete"
            and _data_mount_changed(step)):
        return Finding(urn, op, "postgres data mount", detail or "changes its data mount")
    return None


def find_stateful_changes(preview: Mapping[str, Any]) -> List[Finding]:
    """Findings for every step of a `pulumi preview --json` document, one per URN."""
    seen: dict[str, Finding] = {}
    for step in preview.get("steps") or []:
        finding = classify(step)
        if finding and finding.urn not in seen:
            seen[finding.urn] = finding
    return list(seen.values())


def parse_allow(value: Optional[str]) -> set[str]:
    return {item.strip() for item in (value or "").split(",") if item.strip()}


def is_allowed(finding: Finding, allowed: Iterable[str]) -> bool:
    """Allowed by its full URN, or by its logical name (unambiguous within one stack)."""
    allowed = set(allowed)
    return finding.urn in allowed or finding.name in allowed


def load_preview(text: str) -> Mapping[str, Any]:
    """The JSON document in `text`; tolerates log lines printed before it."""
    text = text.strip()
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object in the preview output")
    doc = json.loads(text[start:])
    if not isinstance(doc, dict):
        raise ValueError("the preview output is not a JSON object")
    return doc


def report(findings: Sequence[Finding], allowed: set[str], allow_all: bool,
           stack: str = "") -> tuple[int, str]:
    """Exit code and the message for the operator."""
    where = f" in stack {stack}" if stack else ""
    if not findings:
        return EXIT_OK, f"guard-stateful: no stateful resource is replaced or deleted{where}."
    blocked = [f for f in findings if not (allow_all or is_allowed(f, allowed))]
    lines = []
    for f in findings:
        mark = "BLOCKED" if f in blocked else "allowed"
        lines.append(f"  [{mark}] {f.describe()}")
    if not blocked:
        head = f"guard-stateful: {len(findings)} stateful change(s){where}, all explicitly allowed:"
        return EXIT_OK, "\n".join([head, *lines])
    head = (f"guard-stateful: refusing: this change would replace or delete "
            f"{len(blocked)} stateful resource(s){where}:")
    tail = ("If that is intended (after a backup!), re-run with --allow-stateful, or allow exactly "
            "these with\n  ALLOW_STATEFUL_REPLACE=" + ",".join(f.urn for f in blocked))
    return EXIT_BLOCKED, "\n".join([head, *lines, tail])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("preview", nargs="?", help="file with `pulumi preview --json` output (default: stdin)")
    parser.add_argument("--allow-stateful", action="store_true", help="allow every stateful change")
    parser.add_argument("--allow", default=os.environ.get("ALLOW_STATEFUL_REPLACE", ""),
                        help="comma-separated URNs (or names) to allow; default $ALLOW_STATEFUL_REPLACE")
    parser.add_argument("--stack", default="")
    args = parser.parse_args(argv)
    try:
        if args.preview and args.preview != "-":
            with open(args.preview, encoding="utf-8") as fh:
                text = fh.read()
        else:
            text = sys.stdin.read()
        preview = load_preview(text)
    except (OSError, ValueError) as exc:
        print(f"guard-stateful: cannot read the preview JSON: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    code, message = report(find_stateful_changes(preview), parse_allow(args.allow),
                           args.allow_stateful, args.stack)
    print(message, file=sys.stderr if code else sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(main())
