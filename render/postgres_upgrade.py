"""The PostgreSQL major-upgrade script (README: PostgreSQL major upgrade), as a pure function.

One script, two phases, both run by `pulumi up` whenever the postgres image changes: `prepare`
before the container is replaced, `finish` once the new one is healthy. Both do nothing unless
the data directory's major version differs from the new image's; then `prepare` refuses, or
(database.upgrade: dump-restore) dumps and moves the old data aside, and `finish` restores and
verifies it (render/templates/postgres-upgrade.sh.j2).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ._templating import check_ident, render

PHASES = ("prepare", "finish")


@dataclass(frozen=True)
class UpgradeSettings:
    mode: Literal["refuse", "dump-restore"]
    container: str  # the fixed-name postgres container
    volume: str  # its data volume (the data directory is PGDATA's subdirectory of it)
    image: str  # the new image (id or reference)
    db_name: str
    db_user: str
    app_label: str  # key=value: the API replicas, stopped while the data moves
    proxy_container: str  # reloaded after the API is back (it resolves replicas at load)
    docker_cli: str = "docker"
    pgdata_subdir: str = "pgdata"

    def __post_init__(self) -> None:
        if self.mode not in ("refuse", "dump-restore"):
            raise ValueError(f"mode: {self.mode!r} must be refuse or dump-restore")
        for what in ("container", "volume", "db_name", "db_user", "proxy_container", "pgdata_subdir"):
            check_ident(getattr(self, what), what)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:/@-]*", self.image):
            raise ValueError(f"image: {self.image!r} is not an image id or reference")
        key, _, value = self.app_label.partition("=")
        check_ident(key, "app_label key")
        check_ident(value, "app_label value")
        if not re.fullmatch(r"docker( -H [A-Za-z0-9_.:/+@-]+)?", self.docker_cli):
            raise ValueError(f"docker_cli: {self.docker_cli!r} must be `docker` or `docker -H <endpoint>`")


def render_upgrade_script(s: UpgradeSettings) -> str:
    return render("postgres-upgrade.sh.j2", s=s)


_TAG_MAJOR = re.compile(r"^(\d+)(?:[.\-_]|$)")


def major_of(image: str) -> int | None:
    """The PostgreSQL major version an image reference names by its tag (`postgres:17`,
    `postgres:15.6-alpine`, `registry:5000/pg:14@sha256:...`), or None when the tag does not
    say (a digest alone, `latest`)."""
    ref = image.split("@", 1)[0]
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:  # `host:5000/name` without a tag
        return None
    m = _TAG_MAJOR.match(tag)
    return int(m.group(1)) if m else None
