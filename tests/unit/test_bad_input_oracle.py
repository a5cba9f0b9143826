"""The bad-input oracle (tests/reliability/documented_config.py) without the engine: it covers
the README's configuration table and every key the model declares, judges by the README (not by
the model), and every value it calls invalid that the model accepts is one of the known, explained
classes of test_rb_bad_input.KNOWN_ACCEPTED. Also the generator itself, on the dev stack's config."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.reliability import documented_config as doc
from tests.reliability import test_rb_bad_input as bad

REPO = Path(__file__).resolve().parents[2]


def readme_keys() -> set[str]:
    text = (REPO / "README.md").read_text()
    table = text[text.index("## Configuration"):text.index("## Outputs")]
    keys = set()
    for key in re.findall(r"^\| `([a-z_.<>]+)` \|", table, flags=re.M):
        if key.startswith("target."):
            continue  # the target has strategies of its own (missing secret, conflicts)
        keys |= {key.replace("<service>", s) for s in doc.SERVICES} if "<service>" in key else {key}
    return keys


def test_the_rules_cover_the_readme_table_and_every_model_key():
    assert set(doc.RULES) == readme_keys()
    assert {leaf.path for leaf in bad.LEAVES} <= set(doc.RULES)


@pytest.mark.parametrize("path, value, verdict", [
    ("api.replicas", 3, "valid"), ("api.replicas", "3", "valid"), ("api.replicas", 3.0, "valid"),
    ("api.replicas", 0, "invalid"), ("api.replicas", 21, "invalid"), ("api.replicas", True, "invalid"),
    ("api.replicas", 2.5, "invalid"), ("api.replicas", "two", "invalid"), ("api.replicas", [1], "invalid"),
    ("nginx.https_port", 65536, "invalid"), ("loopback_ports.redis", None, "valid"),
    ("images.pull", False, "valid"), ("images.pull", "yes", "invalid"), ("images.pull", 1, "invalid"),
    ("protect_data", True, "valid"), ("protect_data", "true", "valid"), ("protect_data", 1, "invalid"),
    ("name_prefix", 5, "valid"),  # top level: the program receives "5"
    ("app.jwt_expires_in", 7, "invalid"), ("tls.mode", "acme", "invalid"), ("environment", "prod", "valid"),
    ("monitoring.retention", "15d", "valid"), ("monitoring.retention", "15 days", "invalid"),
    ("timezone", "Europe/Berlin", "valid"), ("timezone", "Mars/Base", "invalid"),
    ("monitoring.alerts.api_error_ratio", 1.5, "invalid"), ("resources.api.cpus", 0, "invalid"),
    ("bootstrap.allowed_tcp_ports", [22, 70000], "invalid"), ("domains", [], "invalid"),
    ("no.such.key", 1, "undocumented"),
])
def test_the_oracle_judges_by_the_readme(path, value, verdict):
    assert doc.judge(path, value).split(":")[0] == verdict


def test_every_value_the_model_accepts_against_the_readme_is_known():
    swept = bad.sweep({"ai-meeting:name_prefix": "aim-rb"})
    unexplained = [(key, value, verdict) for key, value, verdict, reason in swept if reason is None]
    assert not unexplained, f"the model accepts values the README calls invalid, not explained: {unexplained}"
    seen = {reason for *_, reason in swept}
    assert seen == set(bad.KNOWN_ACCEPTED), f"a known class no longer occurs (fixed? remove it): {set(bad.KNOWN_ACCEPTED) - seen}"


def test_the_generator_on_the_dev_config_judges_by_the_readme():
    base = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())["config"]
    base["ai-meeting:name_prefix"] = "aim-rb"
    generated = bad.generate(base)
    assert len(generated.cases) >= bad.WANTED
    picked = bad.round_robin(generated.cases, bad.PREVIEWED)
    by_category = {c: sum(1 for case in picked if case[0] == c) for c, _, _ in generated.cases}
    assert len(by_category) == 8 and all(n >= 10 for n in by_category.values()), by_category
    for category, key, cfg in generated.cases:
        if category in ("wrong type", "out of range"):
            assert bad.is_invalid(cfg, key), (category, key)  # refused for this key, not a sibling
    assert all(a[4] in bad.KNOWN_ACCEPTED for a in generated.accepted), generated.accepted
