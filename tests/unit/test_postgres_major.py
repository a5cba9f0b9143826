"""The PostgreSQL major-version guard (README: PostgreSQL major upgrade): which image changes
the preview refuses, and how the major version is read from an image reference."""
from __future__ import annotations

import pytest

from components.postgres_major import major_change_problem
from render.postgres_upgrade import UpgradeSettings, major_of


@pytest.mark.parametrize("ref, major", [
    ("postgres:14-alpine", 14), ("postgres:17", 17), ("postgres:15.6-bookworm", 15), ("ai-meeting-local/postgres:15", 15),
    ("registry.example.com:5000/pg:16@sha256:" + "a" * 64, 16), ("postgres@sha256:" + "a" * 64, None),
    ("postgres:latest", None), ("registry.example.com:5000/postgres", None), ("postgres:bookworm", None),
])
def test_the_major_version_comes_from_the_tag(ref, major):
    assert major_of(ref) == major


def test_same_major_or_unknown_passes():
    assert major_change_problem({"image": "postgres:15.5", "major": 15}, "postgres:15.6", "refuse") is None
    assert major_change_problem(None, "postgres:17", "refuse") is None  # first deploy: the server checks the data
    assert major_change_problem({"major": None}, "postgres:17", "refuse") is None
    assert major_change_problem({"major": 15}, "postgres@sha256:" + "a" * 64, "refuse") is None


def test_another_major_is_refused_unless_asked_and_a_downgrade_always():
    problem = major_change_problem({"major": 15}, "postgres:17", "refuse")
    assert problem.startswith("images.postgres: ") and "database.upgrade to dump-restore" in problem
    assert major_change_problem({"major": 15}, "postgres:17", "dump-restore") is None
    for mode in ("refuse", "dump-restore"):
        down = major_change_problem({"major": 17}, "postgres:15", mode)
        assert down.startswith("images.postgres: ") and "downgrade is not supported" in down


def test_the_upgrade_settings_refuse_what_cannot_be_quoted_safely():
    good = dict(mode="refuse", container="c", volume="v", image="postgres:17", db_name="d", db_user="u",
                app_label="k=v", proxy_container="n")
    UpgradeSettings(**good)
    for key, bad in [("mode", "pg_upgrade"), ("container", "a;b"), ("image", "x y"), ("app_label", "novalue"),
                     ("docker_cli", "docker; rm -rf /"), ("db_user", "$(id)")]:
        with pytest.raises(ValueError):
            UpgradeSettings(**{**good, key: bad})


def test_dump_restore_is_refused_on_a_swarm_rather_than_ignored():
    from tests.unit.harness import FAKE_PEM
    from tests.unit.test_config import problems

    swarm = {"kind": "swarm", "private_key": FAKE_PEM, "nodes": [
        {"host": "10.0.0.1", "role": "manager", "labels": {"ai-meeting.data": "true", "ai-meeting.edge": "true"}}]}
    found = problems({"target": swarm, "database": {"upgrade": "dump-restore"}})
    assert len(found) == 1 and found[0].startswith("ai-meeting:database.upgrade: dump-restore is not available on target.kind swarm")
    assert problems({"database": {"upgrade": "pg_upgrade"}})[0].startswith("ai-meeting:database.upgrade")
