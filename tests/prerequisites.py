"""One rule for every tier: a missing tool skips a test with the reason, except under
CI=true, where it fails (CI must prove the tier, not quietly skip it)."""

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)
