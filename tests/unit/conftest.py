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


@pytest.fixture(autouse=True)
def no_server_to_ask_for_its_machine_id(monkeypatch):
    """Under mocks there is no server to log in to (components/target.py server_identity):
    a prod config's fake address would cost an ssh timeout per stack built."""
    import components.stack
    from tests.unit.harness import mock_server_identity

    monkeypatch.setattr(components.stack, "server_identity", mock_server_identity)
