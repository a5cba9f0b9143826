"""monitoring.alertmanager.*: receivers, e-mail and durations refused naming the key; secrets
never repeated in messages."""
from __future__ import annotations

import pytest

from config import validate_config
from tests.unit.test_config import problems

EMAIL = {"to": ["ops@example.com"], "from": "alerts@example.com", "smarthost": "smtp.example.com:587",
         "auth_username": "alerts", "auth_password": "pw-not-in-messages"}


def test_off_by_default_and_a_full_receiver_set_validates():
    assert not validate_config({"environment": "dev"}, "dev").monitoring.alertmanager.enabled
    am = validate_config({"environment": "dev", "monitoring": {"enabled": True, "alertmanager": {
        "enabled": True, "webhook_urls": ["https://hooks.example.com/T0/secret-token"], "email": EMAIL}}}, "dev"
    ).monitoring.alertmanager
    assert am.email.from_ == "alerts@example.com" and am.email.auth_password.get_secret_value() == "pw-not-in-messages"
    assert am.webhook_urls[0].get_secret_value().endswith("secret-token")


@pytest.mark.parametrize("alertmanager, key, words", [
    ({"enabled": True}, "monitoring.alertmanager.webhook_urls", "at least one receiver"),
    ({"webhook_urls": ["ftp://x/secret-token"]}, "monitoring.alertmanager.webhook_urls[0]", "http:// or https://"),
    ({"email": {**EMAIL, "to": ["ops"]}}, "monitoring.alertmanager.email.to[0]", "not an e-mail address"),
    ({"email": {**EMAIL, "to": []}}, "monitoring.alertmanager.email.to", "at least 1"),
    ({"email": {**EMAIL, "from": "me"}}, "monitoring.alertmanager.email.from", "not an e-mail address"),
    ({"email": {**EMAIL, "smarthost": "smtp.example.com"}}, "monitoring.alertmanager.email.smarthost", "host:port"),
    ({"email": {k: v for k, v in EMAIL.items() if k != "auth_username"}}, "monitoring.alertmanager.email.auth_password", "go together"),
    ({"email": {**EMAIL, "cc": "x"}}, "monitoring.alertmanager.email.cc", "unknown key"),
    ({"group_wait": "soon"}, "monitoring.alertmanager.group_wait", "duration"),
])
def test_bad_alertmanager_values_name_the_key(alertmanager, key, words):
    found = problems({"monitoring": {"alertmanager": alertmanager}})
    assert len(found) == 1, found
    assert found[0].startswith(f"ai-meeting:{key}: "), found
    assert words in found[0], found
    assert "secret-token" not in found[0] and "pw-not-in-messages" not in found[0]


def test_its_port_may_not_clash():
    found = problems({"monitoring": {"enabled": True, "prometheus_port": 9093,
                                     "alertmanager": {"enabled": True, "webhook_urls": ["http://r:1/a"]}}})
    assert any("9093" in p for p in found), found
