"""The release history (components/releases.py): what `scripts/rollback` reads."""

from __future__ import annotations

import pytest

from components import releases
from components.previous_outputs import previous_outputs
from components.releases import KEEP, next_history
from tests.unit.harness import config, deploy

ONE = {"api": "api:1", "web": "web:1", "api_image_id": "sha256:a1", "web_image_id": "sha256:w1"}
TWO = {**ONE, "api": "api:2", "api_image_id": "sha256:a2"}


def test_a_new_release_goes_in_front_and_an_unchanged_one_changes_nothing():
    first = next_history(None, ONE, "t1")
    assert first == [{**ONE, "deployed_at": "t1"}]
    assert next_history(first, ONE, "t2") == first, "an up without a new image must not change the output"
    second = next_history(first, TWO, "t3")
    assert [r["api"] for r in second] == ["api:2", "api:1"] and second[0]["deployed_at"] == "t3"
    # Same tag, new content (a rebuilt image): a release of its own.
    rebuilt = next_history(second, {**TWO, "api_image_id": "sha256:a2b"}, "t4")
    assert len(rebuilt) == 3


def test_the_history_keeps_the_last_releases_only():
    history = None
    for i in range(KEEP + 5):
        history = next_history(history, {**ONE, "api": f"api:{i}"}, f"t{i}")
    assert len(history) == KEEP and history[0]["api"] == f"api:{KEEP + 4}"


@pytest.mark.parametrize("previous", [None, "garbage", [1, "x"], {}])
def test_an_unreadable_previous_output_starts_a_new_history(previous):
    assert next_history(previous, ONE, "t") == [{**ONE, "deployed_at": "t"}]


def test_the_stack_exports_its_releases(tmp_path, monkeypatch):
    monkeypatch.setenv("AI_MEETING_CACHE", str(tmp_path))

    def earlier():
        return [{**ONE, "api": "old:1", "deployed_at": "t0"}]

    earlier.patched = True
    monkeypatch.setattr(releases, "previous_releases", earlier)
    d = deploy(config("dev"))
    history = d.outputs["releases"]
    assert [r["api"] for r in history][1:] == ["old:1"]
    cfg = config("dev")
    assert history[0]["api"] == cfg.images.api and history[0]["web"] == cfg.images.web
    assert history[0]["api_image_id"] == f"sha256:{cfg.images.api}"  # the mock's image id


def test_the_previous_releases_come_from_the_cli_and_a_first_deploy_has_none(tmp_path, monkeypatch):
    """No StackReference (a refresh would report it as drift after every update): the CLI's
    `stack output`, which has no `releases` on a first deploy (an empty history)."""
    fake = tmp_path / "pulumi"
    fake.write_text('#!/bin/sh\nif [ -n "$HAS" ]; then echo \'{"releases": [{"api": "a:1"}]}\'; else echo "{}"; fi\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setattr(releases.pulumi, "get_stack", lambda: "dev")
    previous_outputs.cache_clear()
    assert releases.previous_releases() is None
    monkeypatch.setenv("HAS", "1")
    previous_outputs.cache_clear()
    assert releases.previous_releases() == [{"api": "a:1"}]
    previous_outputs.cache_clear()
    warnings = []
    monkeypatch.setenv("PATH", "/nonexistent")
    assert previous_outputs("dev", warnings.append) == {} and "could not run" in warnings[0]
    previous_outputs.cache_clear()
