"""The release history (README: Rollback): the last releases of the API and web, newest first,
as the stack output `releases`. `scripts/rollback` returns to one of them.

The stack reads its own previous `releases` output (a StackReference to itself: the state of the
last update) and puts the current release in front when it differs, so an `up` that changes no
image changes nothing here either.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping

import pulumi

KEEP = 10


def next_history(previous: object, current: Mapping[str, object], now: str, keep: int = KEEP) -> list[dict]:
    """Pure: the history after an update that deployed `current` (api, web and their ids)."""
    history = [dict(r) for r in previous if isinstance(r, Mapping)] if isinstance(previous, list) else []
    same = ("api", "web", "api_image_id", "web_image_id")
    if history and all(history[0].get(k) == current.get(k) for k in same):
        return history[:keep]
    return [{**current, "deployed_at": now}, *history][:keep]


def release_history(
    api_ref: str, web_ref: str, api_image_id: pulumi.Input[str | None], web_image_id: pulumi.Input[str | None]
) -> pulumi.Output[list[dict]]:
    me = pulumi.StackReference(f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}")
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return pulumi.Output.all(me.get_output("releases"), api_image_id, web_image_id).apply(
        lambda v: next_history(v[0], {"api": api_ref, "web": web_ref, "api_image_id": v[1], "web_image_id": v[2]}, now)
    )
