"""Pulumi.prod.yaml pointed at the test server and pebble: the one prod-like config the prod
tests start from (each adds its own overrides)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.prod.conftest import Pebble, ProdServer
from tests.prod.stack_checks import CA_ON_SERVER

REPO = Path(__file__).resolve().parents[2]


def prod_like_config(server: ProdServer, pebble: Pebble, **overrides: Any):
    from config import validate_config

    raw = {
        k.removeprefix("ai-meeting:"): v
        for k, v in yaml.safe_load((REPO / "Pulumi.prod.yaml").read_text())["config"].items()
    }
    raw.update(
        environment="prod",
        target={"kind": "ssh", "host": server.host, "port": server.port, "user": server.user,
                "private_key": server.private_key},
        domains=[server.domain],
        tls={"mode": "letsencrypt", "email": f"ops@{server.domain}",
             "acme_server": pebble.directory_url, "acme_ca_bundle": CA_ON_SERVER},
    )
    raw.update(overrides)
    return validate_config(raw, "prod")
