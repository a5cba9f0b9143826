"""The PostgreSQL major-version guard at preview time (README: PostgreSQL major upgrade).

The stack output `postgres.major` records the major version the last update ran; a change of
`images.postgres` to another major is refused before anything is declared, unless
database.upgrade is dump-restore (and never to an older major). The server-side check in
render/postgres_upgrade.py reads the data directory itself, so a stack without that output
(its first update with this version) is still guarded, only later in the `up`.
"""

from __future__ import annotations

from render.postgres_upgrade import major_of


def major_change_problem(previous: object, image: str, mode: str) -> str | None:
    """The problem with moving from the last update's `postgres` output to `image`, or None."""
    before = previous.get("major") if isinstance(previous, dict) else None
    after = major_of(image)
    if not isinstance(before, int) or after is None or before == after:
        return None
    if after < before:
        return (f"images.postgres: the data is PostgreSQL {before} and {image} is {after}: a downgrade is not "
                f"supported; set images.postgres back to a PostgreSQL {before} image")
    if mode != "dump-restore":
        return (f"images.postgres: {image} is PostgreSQL {after} and the data is {before}: a major upgrade must move "
                f"the data; set database.upgrade to dump-restore for this update (README: PostgreSQL major upgrade), "
                f"or keep a PostgreSQL {before} image")
    return None
