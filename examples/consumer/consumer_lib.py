"""The consumer example's logic, unit tested without the engine (tests/guardrails/test_consumer_lib.py).

- `uptime_check`: the definition an uptime monitor needs (plain: URLs are not secret),
- `reporting_database_url`: a connection string for a reporting job, derived from the secret
  `database_url`; computed from a secret it stays one, and we also say so explicitly.
"""

from typing import Optional
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


def uptime_check(stack: str, public_url: str, health_url: Optional[str] = None) -> dict:
    """An uptime-check definition: what to probe, how often, what counts as up."""
    target = health_url or public_url.rstrip("/") + "/health"
    return {
        "name": f"ai-meeting-{stack}",
        "url": target,
        "public_url": public_url,
        "method": "GET",
        "interval_seconds": 60,
        "timeout_seconds": 10,
        "expect_status": 200,
        # dev/self-signed certificates do not verify; prod must.
        "verify_tls": not stack.startswith("dev"),
    }


def reporting_dsn(database_url: str, application_name: str) -> str:
    """The same database, tagged with an application_name so its queries show in pg_stat_activity."""
    parts = urlsplit(database_url)
    query = dict(parse_qsl(parts.query))
    query["application_name"] = application_name
    return urlunsplit(parts._replace(query=urlencode(query)))


def consumer_outputs(infra, stack: str) -> dict:
    """Outputs of the consumer stack from a `pulumi.StackReference` to an ai-meeting stack."""
    import pulumi

    public_url = infra.require_output("public_url")
    health_url = infra.get_output("health_url")
    database_url = infra.require_output("database_url")
    return {
        "uptime_check": pulumi.Output.all(public_url, health_url).apply(
            lambda urls: uptime_check(stack, urls[0], urls[1])),
        "reporting_database_url": pulumi.Output.secret(
            database_url.apply(lambda url: reporting_dsn(url, "uptime-reporter"))),
    }
