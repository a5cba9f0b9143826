"""maintenance.*: defaults, and every bad value refused naming its key (no Pulumi needed)."""
from __future__ import annotations

import pytest

from config import validate_config
from tests.unit.test_config import problems


def test_off_by_default_with_a_message_and_retry_after():
    m = validate_config({"environment": "prod", "tls": {"mode": "letsencrypt", "email": "ops@example.com"},
                         "domains": ["meet.example.com"],
                         "target": {"kind": "ssh", "host": "203.0.113.10",
                                    "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----"}},
                        "prod").maintenance
    assert not m.enabled and m.allow == [] and m.retry_after == 600 and m.message


def test_allow_takes_addresses_and_networks_of_both_families():
    m = validate_config({"environment": "dev", "maintenance": {"enabled": True, "allow": ["203.0.113.7", "10.0.0.0/8", "2001:db8::/32", "::1"]}}, "dev").maintenance
    assert m.allow == ["203.0.113.7", "10.0.0.0/8", "2001:db8::/32", "::1"]


@pytest.mark.parametrize("maintenance, key, words", [
    ({"allow": ["10.0.0.1/8"]}, "maintenance.allow[0]", "the network is 10.0.0.0/8"),
    ({"allow": ["10.0.0.0/8", "office"]}, "maintenance.allow[1]", "not an IP address or network"),
    ({"allow": ["1.2.3.4; deny all"]}, "maintenance.allow[0]", "not an IP address"),
    ({"allow": ["1.2.3.4", "1.2.3.4"]}, "maintenance.allow", "listed twice"),
    ({"allow": "10.0.0.0/8"}, "maintenance.allow", "valid list"),
    ({"retry_after": 0}, "maintenance.retry_after", "greater than or equal to 1"),
    ({"message": ""}, "maintenance.message", "at least 1"),
    ({"enabled": "sometimes"}, "maintenance.enabled", "valid boolean"),
    ({"enable": True}, "maintenance.enable", "unknown key"),
])
def test_bad_maintenance_values_name_the_key(maintenance, key, words):
    found = problems({"maintenance": maintenance})
    assert len(found) == 1, found
    assert found[0].startswith(f"ai-meeting:{key}: "), found
    assert words in found[0], found


def test_refused_on_a_swarm_rather_than_ignored():
    from tests.unit.harness import FAKE_PEM

    swarm = {"kind": "swarm", "private_key": FAKE_PEM, "nodes": [
        {"host": "10.0.0.1", "role": "manager", "labels": {"ai-meeting.data": "true", "ai-meeting.edge": "true"}}]}
    found = problems({"target": swarm, "maintenance": {"enabled": True}})
    assert found == ["ai-meeting:maintenance.enabled: not available on target.kind swarm yet (only local and ssh targets)"], found
