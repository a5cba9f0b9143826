"""The consumer example's pure helpers (the StackReference itself is tested in test_e2e_*)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "consumer"))

from consumer_lib import reporting_dsn, uptime_check  # noqa: E402


def test_uptime_check_prefers_health_url():
    check = uptime_check("prod", "https://meet.example.org/", "https://meet.example.org/api/health")
    assert check["url"] == "https://meet.example.org/api/health"
    assert check["name"] == "ai-meeting-prod" and check["verify_tls"] is True


def test_uptime_check_derives_health_url_and_dev_skips_tls_verify():
    check = uptime_check("dev", "https://localhost:8443/")
    assert check["url"] == "https://localhost:8443/health" and check["verify_tls"] is False


def test_reporting_dsn_adds_application_name_keeping_params():
    url = "postgresql://ai:s3cret@postgres:5432/ai_meeting?sslmode=disable"
    out = reporting_dsn(url, "uptime-reporter")
    assert out.startswith("postgresql://ai:s3cret@postgres:5432/ai_meeting?")
    assert "sslmode=disable" in out and "application_name=uptime-reporter" in out
