"""Alertmanager under Pulumi mocks: its container, its config as a secret, Prometheus's
alerting section pointing at it; nothing of it without monitoring.alertmanager.enabled."""
from __future__ import annotations

import yaml

from tests.unit.harness import config, deploy
from tests.unit.test_monitoring import labels, uploads

EMAIL = {"to": ["ops@example.com"], "from": "alerts@example.com", "smarthost": "smtp.example.com:587",
         "auth_username": "alerts", "auth_password": "smtp-pw-secret"}
AM = {"enabled": True, "webhook_urls": ["http://receiver:8080/alerts"], "email": EMAIL, "port": 19093}


def test_alertmanager_runs_and_prometheus_sends_to_it():
    d = deploy(config(monitoring={"enabled": True, "grafana": False, "alertmanager": AM}))
    am = d.recorder.named("alertmanager")
    assert labels(am)["ai-meeting.service"] == "alertmanager"
    assert [(p["internal"], p["external"], p["ip"]) for p in am.inputs["ports"]] == [(9093, 19093, "127.0.0.1")]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in am.inputs["command"]
    conf = yaml.safe_load(uploads(d, "alertmanager")["/etc/alertmanager/alertmanager.yml"])
    assert conf["receivers"][0]["webhook_configs"][0]["url"] == "http://receiver:8080/alerts"
    assert conf["global"]["smtp_auth_password"] == "smtp-pw-secret"
    assert [r for r in d.recorder.of_type("RemoteImage") if r.name == "alertmanager-image"]
    prom = yaml.safe_load(uploads(d, "prometheus")["/etc/prometheus/prometheus.yml"])
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_no_alertmanager_unless_enabled():
    d = deploy(config(monitoring={"enabled": True, "grafana": False}))
    services = {labels(c)["ai-meeting.service"] for c in d.recorder.containers()}
    assert "alertmanager" not in services
    prom = yaml.safe_load(uploads(d, "prometheus")["/etc/prometheus/prometheus.yml"])
    assert "alerting" not in prom
