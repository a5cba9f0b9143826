"""Monitoring files (render/monitoring.py): the Prometheus config, alert rules and blackbox
modules checked by the real promtool / blackbox_exporter (Debian's, in the local images), the
alert rules unit-tested by `promtool test rules` (tests/render/monitoring/alerts.test.yml), and
Grafana's provisioning checked as files (no Grafana image here; the e2e test runs every
dashboard query against a live Prometheus)."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from render.monitoring import (
    BACKUP_METRIC,
    DASHBOARD_DIR,
    DATASOURCE_UID,
    RULES_PATH,
    AlertSettings,
    HttpProbe,
    PrometheusSettings,
    alert_rules,
    render_alert_rules,
    render_blackbox_config,
    render_grafana_dashboard,
    render_grafana_dashboard_provider,
    render_grafana_datasource,
    render_prometheus_config,
)
from render_testlib import run_in

HERE = Path(__file__).resolve().parent
PROMETHEUS_IMAGE = "ai-meeting-local/prometheus:2.42"
BLACKBOX_IMAGE = "ai-meeting-local/blackbox-exporter:0.23"

SETTINGS = PrometheusSettings(
    api_targets=("api-1:9090", "api-2:9090"),
    http_probes=(HttpProbe("nginx", "https://nginx/health", "https_2xx"), HttpProbe("web", "http://web:80/")),
    tcp_probes=(("postgres", "postgres:5432"), ("redis", "redis:6379")),
)






# ---- real tools -------------------------------------------------------------------------------


@pytest.mark.docker
def test_promtool_accepts_the_config_and_its_rules(images, tmp_path):
    (tmp_path / "prometheus.yml").write_text(render_prometheus_config(SETTINGS))
    # Every rule there can be (off-site copies on too).
    (tmp_path / Path(RULES_PATH).name).write_text(render_alert_rules(AlertSettings(offsite_backups=True)))
    # Mounted where the stack uploads them: the config names the rules by that absolute path.
    res = run_in(PROMETHEUS_IMAGE, "promtool", tmp_path, str(Path(RULES_PATH).parent), "check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 1 rule files found" in res.stdout + res.stderr
    res = run_in(PROMETHEUS_IMAGE, "promtool", tmp_path, "/w", "check", "rules", Path(RULES_PATH).name)
    assert res.returncode == 0 and "SUCCESS: 12 rules found" in res.stdout, res.stdout + res.stderr


@pytest.mark.docker
def test_promtool_rejects_a_broken_rule(images, tmp_path):
    """The check above can fail: a rule with a PromQL syntax error is refused."""
    broken = render_alert_rules(AlertSettings()).replace("up == 0", "up == == 0")
    (tmp_path / "rules.yml").write_text(broken)
    res = run_in(PROMETHEUS_IMAGE, "promtool", tmp_path, "/w", "check", "rules", "rules.yml")
    assert res.returncode != 0 and "parse error" in res.stdout + res.stderr


@pytest.mark.docker
def test_each_alert_fires_and_stays_quiet_as_specified(images, tmp_path):
    (tmp_path / Path(RULES_PATH).name).write_text(render_alert_rules(AlertSettings()))
    (tmp_path / "alerts.test.yml").write_text((HERE / "monitoring" / "alerts.test.yml").read_text())
    res = run_in(PROMETHEUS_IMAGE, "promtool", tmp_path, "/w", "test", "rules", "alerts.test.yml")
    assert res.returncode == 0 and "SUCCESS" in res.stdout, res.stdout + res.stderr
    # Every alert of the rules is exercised by the unit tests.
    groups = yaml.safe_load((HERE / "monitoring" / "alerts.test.yml").read_text())["tests"]
    tested = {t["alertname"] for group in groups for t in group["alert_rule_test"] if t["exp_alerts"]}
    assert tested == {r["alert"] for r in alert_rules(AlertSettings())}


@pytest.mark.docker
def test_promtool_unit_tests_catch_a_changed_threshold(images, tmp_path):
    """The unit tests pin the thresholds: rules rendered with a 95 % disk threshold fail them."""
    (tmp_path / Path(RULES_PATH).name).write_text(render_alert_rules(AlertSettings(disk_used_percent=95)))
    (tmp_path / "alerts.test.yml").write_text((HERE / "monitoring" / "alerts.test.yml").read_text())
    res = run_in(PROMETHEUS_IMAGE, "promtool", tmp_path, "/w", "test", "rules", "alerts.test.yml")
    assert res.returncode != 0 and "DiskAlmostFull" in res.stdout + res.stderr


@pytest.mark.docker
@pytest.mark.parametrize("verify", [True, False])
def test_blackbox_exporter_accepts_its_modules(images, tmp_path, verify):
    (tmp_path / "config.yml").write_text(render_blackbox_config("meet.example.com", verify_tls=verify))
    res = run_in(BLACKBOX_IMAGE, "/bin/blackbox_exporter", tmp_path, "/w", "--config.file=config.yml", "--config.check")
    assert res.returncode == 0, res.stdout + res.stderr


# ---- pure rendering ------------------------------------------------------------------------------


def test_config_scrapes_every_replica_and_probes_through_the_blackbox_exporter():
    doc = yaml.safe_load(render_prometheus_config(SETTINGS))
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    assert [sc["targets"] for sc in jobs["api"]["static_configs"]] == [["api-1:9090"], ["api-2:9090"]]
    assert jobs["node"]["static_configs"][0]["targets"] == ["node-exporter:9100"]
    tcp = jobs["probe-tcp_connect"]
    assert tcp["params"] == {"module": ["tcp_connect"]}
    assert {"target_label": "__address__", "replacement": "blackbox-exporter:9115"} in tcp["relabel_configs"]
    assert jobs["probe-https_2xx"]["static_configs"][0] == {"targets": ["https://nginx/health"], "labels": {"service": "nginx"}}
    assert doc["rule_files"] == [RULES_PATH]


def test_intervals_and_for_durations_come_from_the_settings():
    doc = yaml.safe_load(render_prometheus_config(PrometheusSettings(api_targets=("api-1:9090",), scrape_interval="2s", evaluation_interval="1s")))
    assert doc["global"]["scrape_interval"] == "2s" and doc["global"]["evaluation_interval"] == "1s"
    rules = {r["alert"]: r for r in alert_rules(AlertSettings(target_down_for="10s", disk_used_percent=90))}
    assert rules["TargetDown"]["for"] == "10s"
    assert rules["DiskAlmostFull"]["expr"].endswith("> 90")


def test_the_offsite_alert_only_with_offsite_copies():
    rules = {r["alert"]: r for r in alert_rules(AlertSettings(offsite_backups=True))}
    assert "ai_meeting_backup_offsite_last_success_timestamp_seconds" in rules["BackupOffsiteTooOld"]["expr"]
    assert rules["BackupOffsiteTooOld"]["for"] == "26h"
    assert "BackupOffsiteTooOld" not in {r["alert"] for r in alert_rules(AlertSettings())}


def test_backup_alerts_only_where_backups_run():
    backup_alerts = {"BackupTooOld", "BackupMissing", "BackupFailed"}
    assert backup_alerts <= {r["alert"] for r in alert_rules(AlertSettings())}
    assert not backup_alerts & {r["alert"] for r in alert_rules(AlertSettings(backups=False))}
    assert BACKUP_METRIC in render_alert_rules(AlertSettings())


@pytest.mark.parametrize("bad", [
    dict(api_targets=()), dict(api_targets=("api-1",)), dict(api_targets=("api 1:9090",)),
    dict(api_targets=("api-1:9090",), scrape_interval="15"), dict(api_targets=("api-1:9090",), blackbox_exporter=None,
                                                                  tcp_probes=(("postgres", "postgres:5432"),)),
])
def test_bad_prometheus_settings_are_refused(bad):
    with pytest.raises(ValueError):
        PrometheusSettings(**bad)


@pytest.mark.parametrize("bad", [dict(target_down_for="2 minutes"), dict(api_error_ratio=1.5), dict(disk_used_percent=100)])
def test_bad_alert_settings_are_refused(bad):
    with pytest.raises(ValueError):
        AlertSettings(**bad)


def test_blackbox_verifies_real_certificates_by_the_canonical_name():
    https = yaml.safe_load(render_blackbox_config("meet.example.com", verify_tls=True))["modules"]["https_2xx"]["http"]
    assert https["tls_config"] == {"insecure_skip_verify": False, "server_name": "meet.example.com"}
    assert https["headers"] == {"Host": "meet.example.com"} and https["fail_if_not_ssl"] is True
    dev = yaml.safe_load(render_blackbox_config("localhost", verify_tls=False))["modules"]["https_2xx"]["http"]
    assert dev["tls_config"]["insecure_skip_verify"] is True


# ---- Grafana provisioning, as files ----------------------------------------------------------------


def test_grafana_datasource_is_the_stack_prometheus():
    doc = yaml.safe_load(render_grafana_datasource())
    assert doc["apiVersion"] == 1
    (ds,) = doc["datasources"]
    assert ds["type"] == "prometheus" and ds["access"] == "proxy" and ds["isDefault"] is True
    assert ds["url"] == "http://prometheus:9090" and ds["uid"] == DATASOURCE_UID


def test_grafana_dashboard_provider_reads_the_uploaded_dashboards():
    doc = yaml.safe_load(render_grafana_dashboard_provider())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == DASHBOARD_DIR
    assert provider["disableDeletion"] is True and provider["allowUiUpdates"] is False


def test_grafana_dashboard_is_valid_and_uses_the_provisioned_datasource():
    dash = json.loads(render_grafana_dashboard())
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    panels = dash["panels"]
    assert len(panels) >= 5 and len({p["id"] for p in panels}) == len(panels)
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, p["title"]
        assert p["targets"] and all(t["expr"].strip() and t["refId"] for t in p["targets"]), p["title"]
        assert p["gridPos"]["w"] > 0 and p["gridPos"]["h"] > 0
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for metric in ("http_requests_total", "ai_meeting_api_dependency_up", "probe_success", "node_filesystem_avail_bytes",
                   "probe_ssl_earliest_cert_expiry", BACKUP_METRIC):
        assert metric in exprs


# ---- the backup-age metric (servers) -----------------------------------------------------------


@pytest.mark.docker
def test_the_backup_scripts_metric_is_read_by_the_node_exporter(images, tmp_path):
    """The lines of backup.sh that write the metric, run as the script runs them (umask 077),
    then the node exporter's textfile collector (as nobody, like on a server) serves it."""
    from components.monitoring import TEXTFILE_SUBDIR
    from render.backup import BackupSettings, render_backup_script

    script = render_backup_script(BackupSettings())
    start = script.index("# For monitoring:")
    snippet = script[start:script.index("\n\n", start)]
    assert f"$INSTALL_DIR/{TEXTFILE_SUBDIR}" in snippet and BACKUP_METRIC in snippet
    install = tmp_path / "install"
    install.mkdir()
    before = int(time.time())
    subprocess.run(["bash", "-euo", "pipefail", "-c", f"umask 077\nINSTALL_DIR={install}\n{snippet}"], check=True)
    textfile = install / TEXTFILE_SUBDIR
    name = "aim-mon-textfile-check"
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    subprocess.run(["docker", "run", "-d", "--name", name, "--network", "none", "-v", f"{textfile}:/textfile:ro",
                    "ai-meeting-local/node-exporter:1.5", "--collector.textfile.directory=/textfile"],
                   check=True, capture_output=True)
    try:
        def scrape() -> str:
            return subprocess.run(["docker", "exec", name, "curl", "-fsS", "http://127.0.0.1:9100/metrics"],
                                  capture_output=True, text=True).stdout

        deadline = time.monotonic() + 60
        while BACKUP_METRIC not in scrape() and time.monotonic() < deadline:
            time.sleep(0.5)
        lines = [l for l in scrape().splitlines() if l.startswith(BACKUP_METRIC)]
        assert lines, "node exporter does not serve the backup metric"
        assert before <= float(lines[0].split()[-1]) <= time.time() + 1
        assert "node_textfile_scrape_error 0" in scrape()
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
