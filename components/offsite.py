"""Off-site backups (README: Off-site backups): the stack's age key and what the server needs.

The key is derived from a generated password kept (encrypted) in the stack's state, never from
anything on the server: the server gets only the public recipient, so whoever takes the server
cannot read a single off-site copy. Restoring needs the identity, from
`pulumi stack output --show-secrets backup_offsite_identity`.
"""

from __future__ import annotations

import hashlib

import bech32
import pulumi
import pulumi_random as random
import pyrage


def age_identity(seed: str) -> str:
    """An age X25519 identity (AGE-SECRET-KEY-1…) from a secret seed: 32 bytes of SHA-256, in
    age's own bech32 encoding (any 32 bytes are a valid X25519 secret; the curve clamps them)."""
    raw = hashlib.sha256(b"ai-meeting off-site backup key\0" + seed.encode()).digest()
    return bech32.bech32_encode("age-secret-key-", bech32.convertbits(raw, 8, 5)).upper()


def age_recipient(identity: str) -> str:
    """The public recipient (age1…) that encrypts for `identity`, as age itself derives it."""
    return str(pyrage.x25519.Identity.from_str(identity).to_public())


def mc_config(endpoint: str, access_key: str, secret_key: str) -> str:
    """MinIO client's config.json with the one alias `offsite` (a file, not MC_HOST_*: mc does
    not decode every character a secret key may hold in that URL's userinfo)."""
    import json

    alias = {"url": endpoint, "accessKey": access_key, "secretKey": secret_key, "api": "s3v4", "path": "auto"}
    return json.dumps({"version": "10", "aliases": {"offsite": alias}}, separators=(",", ":"))


class OffsiteKey(pulumi.ComponentResource):
    """The stack's off-site backup key: a generated seed in the state (encrypted), the age
    identity derived from it (secret output) and its public recipient (what the server gets)."""

    identity: pulumi.Output[str]
    recipient: pulumi.Output[str]

    def __init__(self, name: str, protect: bool, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ai-meeting:backups:OffsiteKey", name, None, opts)
        # Losing it loses every off-site copy: protected in prod; keep an exported copy offline
        # (README: Off-site backups), since a destroyed stack takes it along.
        seed = random.RandomPassword(
            "offsite-key-seed", length=64, special=False, opts=pulumi.ResourceOptions(parent=self, protect=protect),
        ).result
        self.identity = pulumi.Output.secret(seed.apply(age_identity))
        self.recipient = pulumi.Output.unsecret(self.identity.apply(age_recipient))
        self.register_outputs({"recipient": self.recipient})
