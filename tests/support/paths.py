"""Where things are: the repository, and the toolchain cache scripts/install-pulumi fills."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# AI_MEETING_CACHE as scripts/install-pulumi and scripts/pulumi-env.sh read it (at import time).
CACHE = Path(os.environ.get("AI_MEETING_CACHE", Path.home() / ".cache" / "ai-meeting"))
TOOLCHAIN_BIN = CACHE / "toolchain" / "bin"
