"""Shared test settings. Each tier's own conftest decides how to find its tools; under
CI=true a missing tool is a failure, never a silent skip."""

import os

os.environ.setdefault("PULUMI_SKIP_UPDATE_CHECK", "true")
