"""Pure helpers of the consumer example (unit tested without the engine)."""

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
