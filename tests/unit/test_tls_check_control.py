"""The TLS refusal check of tests/e2e (netcheck.tls_handshake_ok) can tell: it completes a TLS 1.0
and 1.1 handshake with a local server that offers them and is refused by one that offers only
TLS 1.2, so its "refused" against nginx is a refusal seen. No engine, no Docker."""

from __future__ import annotations

import ssl

import pytest

from tests.e2e import netcheck


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_2], ids=lambda v: v.name)
def test_the_checker_sees_a_protocol_that_is_offered(tmp_path, version):
    with netcheck.tls_control_server(version, tmp_path) as port:
        assert netcheck.tls_handshake_ok(port, version)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=lambda v: v.name)
def test_the_checker_reports_a_refusal(tmp_path, version):
    with netcheck.tls_control_server(ssl.TLSVersion.TLSv1_2, tmp_path) as port:
        assert not netcheck.tls_handshake_ok(port, version)
        assert netcheck.tls_handshake_ok(port, ssl.TLSVersion.TLSv1_2)
