"""The release history (README: Roll back a release): the last releases of the API and web,
newest first, as the stack output `releases`. `scripts/rollback` returns to one of them.

The program reads its stack's previous `releases` output (components/previous_outputs.py) and puts the current release in front when it differs, so an `up` that changes no image
changes nothing here either. The time comes from a small local command that runs once per
release: unknown in a preview that brings a new release (so a saved plan accepts the time of its
apply), read from the state otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
import pulumi_command as command

from .previous_outputs import previous_outputs

KEEP = 10
SAME_RELEASE = ("api", "web", "api_image_id", "web_image_id")


def next_history(previous: object, current: Mapping[str, object], deployed_at: str, keep: int = KEEP) -> list[dict]:
    """Pure: the history after an update that deployed `current` (api, web and their ids)."""
    history = [dict(r) for r in previous if isinstance(r, Mapping)] if isinstance(previous, list) else []
    if history and all(history[0].get(k) == current.get(k) for k in SAME_RELEASE):
        return history[:keep]
    return [{**current, "deployed_at": deployed_at}, *history][:keep]


def previous_releases() -> object:
    """The stack's `releases` output as the last update left it; None on a first deploy."""
    return previous_outputs(pulumi.get_stack()).get("releases")


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
