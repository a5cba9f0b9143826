"""Alert delivery files (render/monitoring.py): alertmanager.yml checked by the real
`amtool check-config` (Debian's prometheus-alertmanager, images/alertmanager) and Prometheus's
`alerting:` section by `promtool check config`; secrets stay where they belong."""
from __future__ import annotations

import contextlib
import email
import json
import socket
import subprocess
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from render.monitoring import (
    RULES_PATH,
    AlertmanagerSettings,
    AlertSettings,
    EmailReceiver,
    PrometheusSettings,
    render_alert_rules,
    render_alertmanager_config,
    render_prometheus_config,
)
from render_testlib import run_in

ALERTMANAGER_IMAGE = "ai-meeting-local/alertmanager:0.25"
PROMETHEUS_IMAGE = "ai-meeting-local/prometheus:2.42"
EMAIL = EmailReceiver(to=("ops@example.com", "oncall@example.org"), sender="alerts@example.com",
                      smarthost="smtp.example.com:587", auth_username="alerts", auth_password="s3cret-pw")
BOTH = AlertmanagerSettings(webhook_urls=("http://receiver:8080/alerts", "https://hooks.example.com/T000/B000/tok"),
                            email=EMAIL)






# ---- the real amtool / promtool ------------------------------------------------------------------

@pytest.mark.docker
@pytest.mark.parametrize("settings", [
    BOTH,
    AlertmanagerSettings(webhook_urls=("http://receiver:8080/alerts",)),
    AlertmanagerSettings(email=EmailReceiver(to=("ops@example.com",), sender="am@example.com", smarthost="mail:25",
                                             require_tls=False)),
], ids=["webhooks+email", "webhook", "email-no-auth"])
def test_amtool_accepts_the_rendered_config(images, tmp_path, settings):
    (tmp_path / "alertmanager.yml").write_text(render_alertmanager_config(settings))
    res = run_in(ALERTMANAGER_IMAGE, "amtool", tmp_path, "/w", "check-config", "alertmanager.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


@pytest.mark.docker
def test_amtool_rejects_a_broken_config(images, tmp_path):
    doc = yaml.safe_load(render_alertmanager_config(BOTH))
    doc["route"]["receiver"] = "nobody-by-that-name"
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(doc))
    res = run_in(ALERTMANAGER_IMAGE, "amtool", tmp_path, "/w", "check-config", "alertmanager.yml")
    assert res.returncode != 0 and "nobody-by-that-name" in res.stdout + res.stderr


@pytest.mark.docker
def test_promtool_accepts_prometheus_with_its_alertmanager(images, tmp_path):
    s = PrometheusSettings(api_targets=("api-1:9090",), alertmanagers=("alertmanager:9093",))
    (tmp_path / "prometheus.yml").write_text(render_prometheus_config(s))
    (tmp_path / Path(RULES_PATH).name).write_text(render_alert_rules(AlertSettings()))
    res = run_in(PROMETHEUS_IMAGE, "promtool", tmp_path, str(Path(RULES_PATH).parent), "check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr


# ---- pure functions -------------------------------------------------------------------------------

def test_every_receiver_gets_each_alert_and_its_resolution():
    doc = yaml.safe_load(render_alertmanager_config(BOTH))
    assert doc["route"]["receiver"] == "ai-meeting" and "routes" not in doc["route"]
    (receiver,) = doc["receivers"]
    assert [w["url"] for w in receiver["webhook_configs"]] == list(BOTH.webhook_urls)
    assert all(w["send_resolved"] for w in receiver["webhook_configs"])
    assert receiver["email_configs"] == [{"to": "ops@example.com, oncall@example.org", "send_resolved": True}]
    g = doc["global"]
    assert g["smtp_smarthost"] == "smtp.example.com:587" and g["smtp_from"] == "alerts@example.com"
    assert g["smtp_auth_username"] == "alerts" and g["smtp_auth_password"] == "s3cret-pw" and g["smtp_require_tls"] is True
    assert doc["route"]["group_wait"] == "30s" and doc["route"]["repeat_interval"] == "4h"


def test_no_smtp_settings_without_email_and_no_auth_without_a_user():
    doc = yaml.safe_load(render_alertmanager_config(AlertmanagerSettings(webhook_urls=("http://r:1/a",))))
    assert not any(k.startswith("smtp_") for k in doc["global"]) and "email_configs" not in doc["receivers"][0]
    doc = yaml.safe_load(render_alertmanager_config(AlertmanagerSettings(
        email=EmailReceiver(to=("a@b.co",), sender="c@d.co", smarthost="mail:25"))))
    assert "smtp_auth_username" not in doc["global"] and "smtp_auth_password" not in doc["global"]


def test_prometheus_alerting_section_only_with_an_alertmanager():
    plain = yaml.safe_load(render_prometheus_config(PrometheusSettings(api_targets=("api-1:9090",))))
    assert "alerting" not in plain and "alertmanager" not in [j["job_name"] for j in plain["scrape_configs"]]
    doc = yaml.safe_load(render_prometheus_config(PrometheusSettings(api_targets=("api-1:9090",),
                                                                     alertmanagers=("alertmanager:9093",))))
    assert doc["alerting"] == {"alertmanagers": [{"static_configs": [{"targets": ["alertmanager:9093"]}]}]}
    assert {"job_name": "alertmanager", "static_configs": [{"targets": ["alertmanager:9093"]}]} in doc["scrape_configs"]


@pytest.mark.parametrize("make, words", [
    (lambda: AlertmanagerSettings(), "at least one receiver"),
    (lambda: AlertmanagerSettings(webhook_urls=("ftp://x/y",)), r"webhook_urls\[0\]"),
    (lambda: AlertmanagerSettings(webhook_urls="http://a/b"), "tuple"),
    (lambda: AlertmanagerSettings(webhook_urls=("http://a/b",), group_wait="soon"), "group_wait"),
    (lambda: AlertmanagerSettings(webhook_urls=("http://a/b",), group_by=("bad-label",)), "group_by"),
    (lambda: EmailReceiver(to=("nope",), sender="a@b.co", smarthost="m:25"), r"email.to\[0\]"),
    (lambda: EmailReceiver(to=("a@b.co",), sender="nope", smarthost="m:25"), "email.from"),
    (lambda: EmailReceiver(to=("a@b.co",), sender="a@b.co", smarthost="m"), "email.smarthost"),
    (lambda: EmailReceiver(to=("a@b.co",), sender="a@b.co", smarthost="m:25", auth_username="u"), "go together"),
    (lambda: PrometheusSettings(api_targets=("api:1",), alertmanagers=("no port",)), r"alertmanagers\[0\]"),
])
def test_bad_settings_are_refused_naming_the_field(make, words):
    with pytest.raises(ValueError, match=words):
        make()


# ---- a real delivery: Alertmanager with the rendered config notifies a person ---------------------

@contextlib.contextmanager
def running_alertmanager(settings: AlertmanagerSettings, tmp_path: Path):
    """The real alertmanager (images/alertmanager) with a rendered config, in the host's network
    namespace (loopback only, no cluster port): it reaches receivers on 127.0.0.1 whatever the
    engine's bridge setup. Yields its API base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        api_port = s.getsockname()[1]
    (tmp_path / "alertmanager.yml").write_text(render_alertmanager_config(settings))
    tmp_path.chmod(0o755)
    (tmp_path / "alertmanager.yml").chmod(0o644)
    name = f"aim-d2-alertmanager-test-{api_port}"
    subprocess.run(["docker", "run", "-d", "--name", name, "--label", "ai-meeting-test=1", "--network", "host",
                    "-v", f"{tmp_path}:/etc/alertmanager:ro", ALERTMANAGER_IMAGE,
                    "--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager",
                    f"--web.listen-address=127.0.0.1:{api_port}", "--cluster.listen-address="],
                   check=True, capture_output=True)
    try:
        base = f"http://127.0.0.1:{api_port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/-/ready", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline, subprocess.run(["docker", "logs", name], capture_output=True, text=True).stderr[-2000:]
                time.sleep(0.5)
        try:
            yield base
        except AssertionError as exc:
            logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stderr[-3000:]
            raise AssertionError(f"{exc}\n--- alertmanager's log\n{logs}") from None
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def post_alert(base: str, ends: datetime | None = None) -> float:
    """A TargetDown alert (or its end) posted to Alertmanager's API, as Prometheus posts it."""
    now = datetime.now(timezone.utc)
    alert = {"labels": {"alertname": "TargetDown", "service": "api", "instance": "api-2:9090", "severity": "critical"},
             "annotations": {"summary": "api target api-2:9090 is down"},
             "startsAt": (now - timedelta(minutes=3)).isoformat()}
    if ends:
        alert["endsAt"] = ends.isoformat()
    req = urllib.request.Request(f"{base}/api/v2/alerts", data=json.dumps([alert]).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(req, timeout=5).read()
    return time.monotonic()


def wait_until(what: str, check, since: float, timeout: float = 30) -> float:
    while time.monotonic() - since < timeout:
        if check():
            return time.monotonic() - since
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {timeout:.0f} s")


FAST = dict(group_wait="1s", group_interval="2s", repeat_interval="1h")


@pytest.mark.docker
def test_rendered_config_delivers_an_alert_and_its_resolution_to_a_webhook(images, tmp_path):
    """An alert posted to the real Alertmanager reaches a webhook receiver on this machine,
    then its resolution (send_resolved)."""
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    settings = AlertmanagerSettings(webhook_urls=(f"http://127.0.0.1:{hook.server_address[1]}/alerts",), **FAST)
    try:
        with running_alertmanager(settings, tmp_path) as base:
            def got(status: str):
                return lambda: any(n["status"] == status for n in received)
            fired = wait_until("firing webhook", got("firing"), post_alert(base))
            resolved = wait_until("resolved webhook", got("resolved"), post_alert(base, datetime.now(timezone.utc)))
    finally:
        hook.shutdown()
        hook.server_close()
    note = received[0]
    assert note["receiver"] == "ai-meeting" and note["alerts"][0]["labels"]["instance"] == "api-2:9090"
    assert note["groupLabels"] == {"alertname": "TargetDown", "service": "api", "instance": "api-2:9090"}
    print(f"alertmanager -> webhook: firing after {fired:.1f} s, resolved after {resolved:.1f} s")


@pytest.mark.docker
def test_rendered_config_delivers_an_alert_and_its_resolution_by_email(images, tmp_path):
    """The e-mail receiver for real: Alertmanager speaks SMTP (with AUTH over a plain connection
    when require_tls is off, as a relay on the same host would take it) to a real SMTP server
    (aiosmtpd) on this machine; the alert and then its resolution arrive, to every address."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    mails: list[tuple[list[str], email.message.Message]] = []
    logins: list[str] = []

    class Inbox:
        async def handle_DATA(self, server, session, envelope):
            mails.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"alerts", b"s3cret-pw")
        if ok:
            logins.append(mechanism)
        return AuthResult(success=ok)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        smtp_port = s.getsockname()[1]
    # PLAIN only: aiosmtpd's LOGIN prompts "User Name" where Alertmanager expects "Username:".
    smtp = Controller(Inbox(), hostname="127.0.0.1", port=smtp_port, authenticator=authenticator,
                      auth_require_tls=False, auth_required=True, auth_exclude_mechanism=["LOGIN"])
    smtp.start()
    receiver = EmailReceiver(to=("ops@example.com", "oncall@example.org"), sender="alerts@example.com",
                             smarthost=f"127.0.0.1:{smtp_port}", auth_username="alerts", auth_password="s3cret-pw",
                             require_tls=False)
    try:
        with running_alertmanager(AlertmanagerSettings(email=receiver, **FAST), tmp_path) as base:
            def got(word: str):
                return lambda: any(word in str(m["Subject"]) for _, m in mails)
            fired = wait_until("firing e-mail", got("FIRING"), post_alert(base))
            resolved = wait_until("resolved e-mail", got("RESOLVED"), post_alert(base, datetime.now(timezone.utc)))
    finally:
        smtp.stop()
    first = next(m for _, m in mails if "FIRING" in str(m["Subject"]))
    assert "TargetDown" in str(first["Subject"]) and first["From"] == "alerts@example.com", first["Subject"]
    assert sorted(r for rcpts, m in mails if m is first for r in rcpts) == ["oncall@example.org", "ops@example.com"]
    assert logins, "Alertmanager did not authenticate"
    print(f"alertmanager -> e-mail: firing after {fired:.1f} s, resolved after {resolved:.1f} s")
