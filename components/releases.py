"""The release history (README: Roll back a release): the last releases of the API and web,
newest first, as the stack output `releases`. `scripts/rollback` returns to one of them.

The stack reads its own previous `releases` output (a StackReference to itself: the state of the
last update) and puts the current release in front when it differs, so an `up` that changes no
image changes nothing here either. The time comes from a small local command that runs once per
release: unknown in a preview that brings a new release (so a saved plan accepts the time of
its apply), read from the state otherwise.
"""

from __future__ import annotations

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


def release_history(
    api_ref: str, web_ref: str, api_image_id: pulumi.Input[str | None], web_image_id: pulumi.Input[str | None],
    parent: pulumi.Resource,
) -> pulumi.Output[list[dict]]:
    me = pulumi.StackReference(f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}",
                               opts=pulumi.ResourceOptions(parent=parent))
    ids = pulumi.Output.all(api_image_id, web_image_id).apply(lambda v: [v[0] or "", v[1] or ""])
    release = command.local.Command(
        "release",
        create="date -u +%Y-%m-%dT%H:%M:%SZ",
        triggers=[api_ref, web_ref, ids[0], ids[1]],
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return pulumi.Output.all(me.get_output("releases"), api_image_id, web_image_id, release.stdout).apply(
        lambda v: next_history(v[0], {"api": api_ref, "web": web_ref, "api_image_id": v[1], "web_image_id": v[2]},
                               (v[3] or "").strip())
    )
