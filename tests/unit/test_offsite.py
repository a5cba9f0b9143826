"""Off-site backups (backup.offsite): the config rules, the stack's age key, what a server gets."""

from __future__ import annotations

import shutil
import subprocess

import pytest

import json

from components.offsite import age_identity, age_recipient, mc_config
from config import ConfigError, validate_config
from tests.prerequisites import unavailable
from tests.unit.harness import FAKE_PEM, deploy

OFFSITE = {"enabled": True, "endpoint": "https://s3.example.com", "bucket": "aim-backups", "prefix": "prod/",
           "access_key": "AKIAEXAMPLE", "secret_key": "s3cr3t/+key"}


def ssh_raw(**backup) -> dict:
    return {"environment": "staging", "target": {"kind": "ssh", "host": "203.0.113.10", "private_key": FAKE_PEM},
            "backup": backup}


def problems(raw: dict) -> str:
    with pytest.raises(ConfigError) as exc:
        validate_config(raw, "staging")
    return "\n".join(exc.value.problems)


@pytest.mark.parametrize("change, words", [
    ({"secret_key": None}, "backup.offsite.secret_key: required"),
    ({"bucket": "Bad_Bucket"}, "S3 bucket name"),
    ({"endpoint": "s3.example.com"}, "http(s)://host[:port]"),
    ({"prefix": "/abs"}, "backup.offsite.prefix"),
    ({"retention_days": 0}, "backup.offsite.retention_days"),
])
def test_bad_offsite_settings_name_their_key(change, words):
    offsite = {k: v for k, v in {**OFFSITE, **change}.items() if v is not None}
    assert words in problems(ssh_raw(offsite=offsite))


def test_offsite_needs_a_server_with_backups():
    text = problems({"environment": "dev", "backup": {"offsite": OFFSITE}})
    assert "backup.offsite.enabled" in text and "target.kind ssh or swarm" in text
    assert "backup.offsite.enabled" in problems(ssh_raw(enabled=False, offsite=OFFSITE))


def test_the_derived_identity_is_an_age_identity_for_the_real_tool(tmp_path):
    if shutil.which("age") is None:
        unavailable("age is not installed (scripts/setup installs it)")
    identity = age_identity("a-seed")
    assert identity.startswith("AGE-SECRET-KEY-1") and age_identity("a-seed") == identity != age_identity("b-seed")
    recipient = age_recipient(identity)
    assert recipient.startswith("age1")
    (tmp_path / "id").write_text(identity + "\n")
    enc = subprocess.run(["age", "-r", recipient], input=b"every table", capture_output=True, check=True).stdout
    assert b"every table" not in enc
    dec = subprocess.run(["age", "-d", "-i", str(tmp_path / "id")], input=enc, capture_output=True)
    assert dec.returncode == 0 and dec.stdout == b"every table", dec.stderr
    (tmp_path / "other").write_text(age_identity("b-seed") + "\n")
    assert subprocess.run(["age", "-d", "-i", str(tmp_path / "other")], input=enc, capture_output=True).returncode != 0


def test_mc_config_holds_the_credentials_as_they_are():
    alias = json.loads(mc_config("https://s3.example.com:9000", "AK/1", "s3:cr@t/+x"))["aliases"]["offsite"]
    assert alias == {"url": "https://s3.example.com:9000", "accessKey": "AK/1", "secretKey": "s3:cr@t/+x",
                     "api": "s3v4", "path": "auto"}


def test_a_server_gets_the_recipient_and_credentials_as_secrets_and_the_identity_stays_in_the_stack(tmp_path, monkeypatch):
    monkeypatch.setenv("AI_MEETING_CACHE", str(tmp_path))
    d = deploy(validate_config(ssh_raw(offsite=OFFSITE), "staging"))
    rec = d.recorder
    assert "apt_install curl wget git vim htop net-tools ca-certificates cron age" in rec.named("bootstrap-packages").inputs["stdin"]
    written = rec.named("backup-offsite-secrets")
    assert "stdin" in written.secret_inputs and "s3cr3t" not in written.inputs["create"]
    assert "offsite-mc.json" in written.inputs["create"] and "0600" in written.inputs["create"]
    install = rec.named("backup-install").inputs["create"]
    assert "offsite-backup.sh" in install and "offsite-restore.sh" in install and "s3cr3t" not in install
    assert "backup_offsite_identity" in d.secret_outputs
    assert d.outputs["backup_offsite_identity"].startswith("AGE-SECRET-KEY-1")
    out = d.outputs["backup_offsite"]
    assert out["recipient"] == age_recipient(d.outputs["backup_offsite_identity"]) and out["bucket"] == "aim-backups"
    assert "backup_offsite" not in d.secret_outputs, "the recipient and the place are not secret"
