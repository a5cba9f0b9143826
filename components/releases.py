"""The release history (README: Roll back a release): the last releases of the API and web,
newest first, as the stack output `releases`. `scripts/rollback` returns to one of them.

The program reads its stack's previous `releases` output (`pulumi stack output`, the state of
the last update; not a StackReference, which `pulumi refresh` would report as drift after every
update) and puts the current release in front when it differs, so an `up` that changes no image
changes nothing here either. The time comes from a small local command that runs once per
release: unknown in a preview that brings a new release (so a saved plan accepts the time of its
apply), read from the state otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping

import pulumi
import pulumi_command as command

KEEP = 10
SAME_RELEASE = ("api", "web", "api_image_id", "web_image_id")


def next_history(previous: object, current: Mapping[str, object], deployed_at: str, keep: int = KEEP) -> list[dict]:
    """Pure: the history after an update that deployed `current` (api, web and their ids)."""
    history = [dict(r) for r in previous if isinstance(r, Mapping)] if isinstance(previous, list) else []
    if history and all(history[0].get(k) == current.get(k) for k in SAME_RELEASE):
        return history[:keep]
    return [{**current, "deployed_at": deployed_at}, *history][:keep]


def previous_releases() -> object:
    """The stack's `releases` output as the last update left it; None on a first deploy (or
    when the CLI cannot say: the history then starts again, with a warning)."""
    try:
        proc = subprocess.run(["pulumi", "stack", "output", "releases", "--json", "--stack", pulumi.get_stack()],
                              capture_output=True, text=True, timeout=120, cwd=os.getcwd())
    except (OSError, subprocess.TimeoutExpired) as exc:
        pulumi.log.warn(f"release history: could not run `pulumi stack output` ({exc}); starting anew")
        return None
    if proc.returncode != 0:
        if "does not have output property" not in proc.stderr + proc.stdout:
            pulumi.log.warn(f"release history: could not read the last releases ({proc.stderr.strip()[:200]}); starting anew")
        return None
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return None


def release_history(
    api_ref: str, web_ref: str, api_image_id: pulumi.Input[str | None], web_image_id: pulumi.Input[str | None],
    parent: pulumi.Resource,
) -> pulumi.Output[list[dict]]:
    previous = previous_releases()
    ids = pulumi.Output.all(api_image_id, web_image_id).apply(lambda v: [v[0] or "", v[1] or ""])
    release = command.local.Command(
        "release",
        create="date -u +%Y-%m-%dT%H:%M:%SZ",
        triggers=[api_ref, web_ref, ids[0], ids[1]],
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return pulumi.Output.all(api_image_id, web_image_id, release.stdout).apply(
        lambda v: next_history(previous, {"api": api_ref, "web": web_ref, "api_image_id": v[0], "web_image_id": v[1]},
                               (v[2] or "").strip())
    )
