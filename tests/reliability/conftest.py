"""The reliability tier: faults, durability, secrets and exposure, against a stack deployed
through the real engine. Each scenario records the figure it measured next to its target with
the `record` fixture (root conftest.py); scripts/reliability-report turns them into
docs/reliability.md."""

import pytest

from tests.reliability import stack_rb


@pytest.fixture(scope="package")
def rb_stack(tmp_path_factory):
    """The `rb` dev stack, deployed once for the modules that use it, destroyed after the tier."""
    project = stack_rb.deploy(tmp_path_factory.mktemp("rb-stack"))
    yield project
    stack_rb.destroy(project)
