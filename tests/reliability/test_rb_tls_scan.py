"""testssl.sh (Debian's package) against the deployed stack's nginx: protocols, cipher
categories, the cipher order per protocol against Mozilla's intermediate profile, HSTS and the
certificate. Findings are read from testssl's own JSON (--jsonfile), not from its screen output.

The dev certificate is self-signed: its chain of trust, revocation (no CRL/OCSP URI) and OCSP
stapling cannot pass here, and are reported as what they are rather than counted as weaknesses
of the nginx configuration.
"""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
import time

import pytest

from tests.prerequisites import unavailable
from tests.reliability import stack_rb

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.timeout(900)]

# https://ssl-config.mozilla.org/ intermediate (guidelines 5.7): TLS 1.2 + 1.3, these suites only.
MOZILLA_INTERMEDIATE_TLS12 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
}
MOZILLA_INTERMEDIATE_TLS13 = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
# Findings that only a certificate from a public CA could pass (dev is self-signed).
SELF_SIGNED_ONLY = {"cert_chain_of_trust", "cert_revocation", "DNS_CAArecord", "OCSP_stapling"}


@pytest.fixture(scope="module")
def findings(rb_stack, tmp_path_factory) -> dict[str, dict]:
    testssl = shutil.which("testssl") or shutil.which("testssl.sh")
    if testssl is None:
        unavailable("testssl.sh is not installed (Debian package testssl.sh; scripts/setup)")
    out = tmp_path_factory.mktemp("testssl") / "testssl.json"
    started = time.monotonic()
    # -p protocols, -s cipher categories, -P server preference and the order per protocol,
    # -h headers (HSTS), -S server defaults (certificate, OCSP stapling, tickets).
    proc = subprocess.run([testssl, "--quiet", "--color", "0", "--warnings", "off", "--jsonfile", str(out),
                           "-p", "-s", "-P", "-h", "-S", "--ip", "127.0.0.1", f"https://localhost:{stack_rb.HTTPS}"],
                          capture_output=True, text=True, timeout=600)
    assert out.exists(), f"testssl wrote no JSON (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
    items = json.loads(out.read_text())
    by_id = {i["id"]: i for i in items}
    by_id["<seconds>"] = {"finding": f"{time.monotonic() - started:.0f}"}
    by_id["<all>"] = {"finding": items}
    return by_id


def finding(findings: dict, key: str) -> str:
    assert key in findings, f"testssl reported no {key}: {sorted(findings)}"
    return findings[key]["finding"]


def is_offered(text: str) -> bool:
    """testssl's verdict on one protocol: "offered ..." or "not offered ..."; anything else
    (a scan error, a changed wording) is neither, and fails rather than reads as refused."""
    if text.startswith("not offered"):
        return False
    if text.startswith("offered"):
        return True
    raise AssertionError(f"testssl protocol finding neither offered nor not offered: {text!r}")


def test_is_offered_tells_the_verdicts_apart():
    assert is_offered("offered (OK)") and is_offered("offered with final")
    assert not is_offered("not offered") and not is_offered("not offered (OK)")
    with pytest.raises(AssertionError):
        is_offered("Local problem: couldn't connect")


@pytest.mark.figures(("testssl: protocols offered below TLS 1.2", "none"),
                     ("testssl, positive control: TLS 1.2 and 1.3 (served by nginx) reported offered by the same check",
                      "TLS1_2, TLS1_3"))
def test_no_protocol_below_tls_1_2(findings, record):
    offered = {p: is_offered(finding(findings, p)) for p in ("SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3")}
    old = [p for p in ("SSLv2", "SSLv3", "TLS1", "TLS1_1") if offered[p]]
    # Positive control: the same scan and the same check see the protocols nginx does serve, so a
    # "none" above is a refusal seen, not a check that cannot see anything.
    new = [p for p in ("TLS1_2", "TLS1_3") if offered[p]]
    record("testssl: protocols offered below TLS 1.2", ", ".join(old) or "none", "none", not old)
    record("testssl, positive control: TLS 1.2 and 1.3 (served by nginx) reported offered by the same check",
           ", ".join(new) or "none", "TLS1_2, TLS1_3", new == ["TLS1_2", "TLS1_3"])
    assert not old and new == ["TLS1_2", "TLS1_3"], {p: finding(findings, p) for p in offered}


def test_no_weak_cipher_category(findings, record):
    categories = ("cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW",
                  "cipherlist_3DES_IDEA", "cipherlist_AVERAGE")  # AVERAGE: the obsoleted CBC suites
    offered = [c for c in categories if not finding(findings, c).startswith("not offered")]
    record("testssl: weak cipher categories offered (NULL, aNULL, EXPORT, LOW/RC4, 3DES/IDEA, obsolete CBC)",
           ", ".join(offered) or "none", "none", not offered)
    assert not offered, {c: finding(findings, c) for c in categories}


def test_ciphers_are_mozilla_intermediate(findings, record):
    tls12 = set(finding(findings, "cipherorder_TLSv1_2").split())
    tls13 = set(finding(findings, "cipherorder_TLSv1_3").split())
    extra = sorted((tls12 - MOZILLA_INTERMEDIATE_TLS12) | (tls13 - MOZILLA_INTERMEDIATE_TLS13))
    record("testssl: suites offered beyond Mozilla intermediate", ", ".join(extra) or "none",
           "none", not extra and bool(tls12) and bool(tls13))
    assert tls12 and tls13 and not extra, (tls12, tls13)


def test_hsts_has_a_long_max_age(findings, record):
    hsts = finding(findings, "HSTS_time")
    seconds = int(hsts.split("=")[1].split()[0]) if "=" in hsts else 0
    record("testssl: HSTS max-age", hsts, ">= 180 days (15552000 s)", seconds >= 15552000)
    assert seconds >= 15552000 and findings["HSTS_time"]["severity"] == "OK", hsts


def test_severity_summary_and_self_signed_findings(findings, record):
    items = findings["<all>"]["finding"]
    counts = collections.Counter(i["severity"] for i in items)
    summary = ", ".join(f"{s} {counts.get(s, 0)}" for s in ("OK", "INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL"))
    serious = [f"{i['severity']} {i['id']}: {i['finding']}" for i in items
               if i["severity"] in ("MEDIUM", "HIGH", "CRITICAL") and i["id"] not in SELF_SIGNED_ONLY]
    record(f"testssl.sh findings ({findings['<seconds>']['finding']} s scan)", summary,
           "no MEDIUM/HIGH/CRITICAL beyond the self-signed certificate's", not serious)
    stapling = finding(findings, "OCSP_stapling")
    # Not demonstrable with a self-signed certificate: a figure, not a met target.
    record.figure("testssl: OCSP stapling (dev certificate is self-signed: no OCSP responder to staple)", stapling)
    assert not serious, serious
