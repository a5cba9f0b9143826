"""Pulumi's mocks need a current asyncio event loop; a test elsewhere that ran asyncio.run()
(which leaves none behind) must not make these fail depending on test order."""

import asyncio

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    try:
        asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
