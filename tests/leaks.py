"""Where a secret could leak on this machine: files readable by others that contain it."""

from __future__ import annotations

import stat
from collections.abc import Iterable
from pathlib import Path


def loose_files_containing(values: Iterable[str], *roots: Path) -> list[str]:
    """Files under `roots` with a mode looser than 0600 that contain any of `values`,
    as "path (mode)"; symlinks and files over 5 MB are not read."""
    values = list(values)
    loose = []
    for root in roots:
        for path in root.rglob("*") if root.exists() else []:
            if path.is_symlink() or not path.is_file() or path.stat().st_size > 5_000_000:
                continue
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077 and any(v in path.read_text(errors="ignore") for v in values):
                loose.append(f"{path} ({mode:o})")
    return loose
