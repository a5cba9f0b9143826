"""Monitoring config and the monitoring containers under Pulumi mocks (R17)."""

from __future__ import annotations

import pytest
import yaml

from config import ConfigError
from tests.unit.harness import config, deploy

MONITORING = {"enabled": True, "grafana": False}


def uploads(d, name: str) -> dict[str, str]:
    """The files of container `name` (uploaded into its carrier when its root is read-only)."""
    return {u["file"]: u["content"] for u in d.recorder.uploads_of(d.recorder.named(name))}


def labels(c) -> dict[str, str]:
    return {l["label"]: l["value"] for l in c.inputs.get("labels", [])}


# ---- config ----------------------------------------------------------------------------------


def test_production_defaults():
    m = config().monitoring
    assert (m.enabled, m.grafana, m.scrape_interval, m.evaluation_interval, m.retention) == (False, True, "15s", "15s", "15d")
    a = m.alerts
    assert (a.target_down_for, a.api_error_ratio, a.disk_used_percent, a.backup_max_age_hours, a.certificate_min_days) == (
        "2m", 0.05, 85, 26, 14)


@pytest.mark.parametrize("bad, key", [
    ({"scrape_interval": "15"}, "monitoring.scrape_interval"),
    ({"evaluation_interval": "0s"}, "monitoring.evaluation_interval"),
    ({"retention": "two weeks"}, "monitoring.retention"),
    ({"alerts": {"target_down_for": "2 minutes"}}, "monitoring.alerts.target_down_for"),
    ({"alerts": {"api_error_ratio": 1.5}}, "monitoring.alerts.api_error_ratio"),
    ({"alerts": {"disk_used_percent": 100}}, "monitoring.alerts.disk_used_percent"),
    ({"alerts": {"backup_max_age_hours": 0}}, "monitoring.alerts.backup_max_age_hours"),
    ({"alerts": {"cert_days": 14}}, "monitoring.alerts.cert_days"),
    ({"grafana": "maybe"}, "monitoring.grafana"),
])
def test_bad_monitoring_values_are_refused_by_key(bad, key):
    with pytest.raises(ConfigError) as e:
        config(monitoring={"enabled": True, **bad})
    assert key in str(e.value)


def test_grafana_port_only_counts_when_grafana_runs():
    with pytest.raises(ConfigError, match="used twice"):
        config(monitoring={"enabled": True, "grafana_port": 9001})  # the MinIO console's port
    assert not config(monitoring={"enabled": True, "grafana": False, "grafana_port": 9001}).monitoring.grafana
    with pytest.raises(ConfigError, match="used twice"):
        config(monitoring={"enabled": True, "grafana": False, "prometheus_port": 9001})


# ---- the stack under mocks ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev():
    return deploy(config(monitoring={**MONITORING, "scrape_interval": "5s", "alerts": {"target_down_for": "30s"}},
                         api={"replicas": 2}))


def test_prometheus_and_exporters_without_grafana(dev):
    services = {labels(c)["ai-meeting.service"] for c in dev.recorder.containers()}
    assert {"prometheus", "node-exporter", "blackbox-exporter"} <= services and "grafana" not in services
    assert not [r for r in dev.recorder.of_type("RemoteImage") if r.name == "grafana-image"]
    assert dev.outputs["prometheus_url"] == "http://127.0.0.1:9091"
    assert "grafana_url" not in dev.outputs and "grafana_admin_password" not in dev.outputs


def test_only_prometheus_publishes_a_port_on_loopback(dev):
    prom = dev.recorder.named("prometheus")
    assert [(p["internal"], p["external"], p["ip"]) for p in prom.inputs["ports"]] == [(9090, 9091, "127.0.0.1")]
    for name in ("node-exporter", "blackbox-exporter"):
        assert not dev.recorder.named(name).inputs.get("ports"), name


def test_prometheus_config_follows_the_stack_config(dev):
    files = uploads(dev, "prometheus")
    prom = yaml.safe_load(files["/etc/prometheus/prometheus.yml"])
    assert prom["global"]["scrape_interval"] == "5s"
    api = next(j for j in prom["scrape_configs"] if j["job_name"] == "api")
    assert [sc["targets"][0] for sc in api["static_configs"]] == ["api-1:9090", "api-2:9090"]  # app.metrics_port
    rules = {r["alert"]: r for r in yaml.safe_load(files["/etc/prometheus/alert-rules.yml"])["groups"][0]["rules"]}
    assert rules["TargetDown"]["for"] == "30s"
    assert "BackupTooOld" not in rules, "dev runs no backups: no backup alert"
    cmd = dev.recorder.named("prometheus").inputs["command"]
    assert "--storage.tsdb.retention.time=15d" in cmd and "--storage.tsdb.path=/prometheus" in cmd


def test_node_exporter_reads_the_host_filesystems_read_only(dev):
    node = dev.recorder.named("node-exporter")
    assert {"hostPath": "/", "containerPath": "/host", "readOnly": True} in [
        {k: v for k, v in vol.items() if k in ("hostPath", "containerPath", "readOnly")} for vol in node.inputs["volumes"]]
    assert "--path.rootfs=/host" in node.inputs["command"]


def test_dev_blackbox_reads_the_self_signed_certificate_without_verifying_it(dev):
    conf = yaml.safe_load(uploads(dev, "blackbox-exporter")["/etc/blackbox_exporter/config.yml"])
    assert conf["modules"]["https_2xx"]["http"]["tls_config"]["insecure_skip_verify"] is True


def test_prod_monitoring_verifies_tls_watches_backups_and_keeps_grafana():
    d = deploy(config("prod", monitoring={"enabled": True}))
    conf = yaml.safe_load(uploads(d, "blackbox-exporter")["/etc/blackbox_exporter/config.yml"])
    assert conf["modules"]["https_2xx"]["http"]["tls_config"] == {"insecure_skip_verify": False, "server_name": "ai-meeting.com"}
    rules = yaml.safe_load(uploads(d, "prometheus")["/etc/prometheus/alert-rules.yml"])["groups"][0]["rules"]
    assert {"BackupTooOld", "BackupMissing"} <= {r["alert"] for r in rules}
    node = d.recorder.named("node-exporter")
    assert any(v.get("hostPath") == "/opt/ai-meeting/metrics" and v.get("containerPath") == "/textfile" for v in node.inputs["volumes"])
    assert "--collector.textfile.directory=/textfile" in node.inputs["command"]
    grafana = uploads(d, "grafana")
    assert {"/etc/grafana/provisioning/datasources/prometheus.yml", "/etc/grafana/provisioning/dashboards/ai-meeting.yml",
            "/var/lib/grafana/dashboards/ai-meeting-overview.json"} <= set(grafana)
    assert "grafana_admin_password" in d.secret_outputs
