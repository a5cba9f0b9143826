"""Pebble (Let's Encrypt's ACME test server), as `scripts/prod-test-server` starts it for the
prod tier (one server) and the swarm tier (its edge nodes)."""

from __future__ import annotations

import ssl
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def parse_env(text: str) -> dict[str, str]:
    """The KEY=VALUE lines `scripts/prod-test-server` prints."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@dataclass
class Pebble:
    directory_url: str  # as seen from the server
    ca_bundle: Path  # CA of pebble's own HTTPS endpoint (what certbot must trust)
    management_url: str  # from this machine

    @classmethod
    def from_harness_env(cls, env: dict[str, str]) -> "Pebble":
        return cls(env["PROD_TEST_ACME_DIRECTORY"], Path(env["PROD_TEST_ACME_CA_BUNDLE"]), env["PROD_TEST_PEBBLE_MANAGEMENT"])

    def _get(self, path: str) -> str:
        ctx = ssl.create_default_context(cafile=str(self.ca_bundle))
        with urllib.request.urlopen(f"{self.management_url}{path}", context=ctx, timeout=10) as r:
            return r.read().decode()

    def issuer_root_pem(self) -> str:
        """Pebble's issuing root (new on every pebble start): what a client of the site trusts."""
        return self._get("/roots/0")

    def issuer_chain_pem(self) -> str:
        """Root plus intermediate, for verifying a served leaf certificate."""
        return self.issuer_root_pem() + self._get("/intermediates/0")

    def check_directory(self) -> None:
        ctx = ssl.create_default_context(cafile=str(self.ca_bundle))
        with urllib.request.urlopen(self.directory_url, context=ctx, timeout=10) as r:
            assert r.status == 200, f"pebble directory {self.directory_url} answered {r.status}"
