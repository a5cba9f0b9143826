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


# ---------------------------------------------------------------- StackReference under mocks

import pulumi  # noqa: E402


class _InfraMocks(pulumi.runtime.Mocks):
    """The referenced stack: plain URLs, a secret database_url (as the engine reports it)."""

    def new_resource(self, args):
        if args.typ == "pulumi:pulumi:StackReference":
            return args.name + "-id", {
                "name": args.inputs.get("name"),
                "outputs": {"public_url": "https://meet.example.org",
                            "health_url": "https://meet.example.org/api/health",
                            "database_url": "postgresql://ai:pw@postgres:5432/ai_meeting"},
                "secretOutputNames": ["database_url"],
            }
        return args.name + "-id", dict(args.inputs)

    def call(self, args):
        return {}


def test_consumer_outputs_from_a_stack_reference_keep_the_secret():
    # Mocks are process-global: set ours right before declaring (other tests set theirs).
    pulumi.runtime.set_mocks(_InfraMocks(), project="ai-meeting-consumer", stack="prod")
    _check_consumer_outputs()


@pulumi.runtime.test
def _check_consumer_outputs():
    from consumer_lib import consumer_outputs

    infra = pulumi.StackReference("ai-meeting", stack_name="organization/ai-meeting/prod")
    outs = consumer_outputs(infra, "prod")

    def check(args):
        check_value, dsn, dsn_secret, check_secret = args
        assert check_value["url"] == "https://meet.example.org/api/health"
        assert dsn.endswith("application_name=uptime-reporter")
        assert dsn_secret is True, "reporting_database_url must stay a secret"
        assert check_secret is False, "the uptime check holds no secret"

    async def is_secret(o):
        return await o.is_secret()

    import asyncio
    return pulumi.Output.all(
        outs["uptime_check"], outs["reporting_database_url"],
        pulumi.Output.from_input(asyncio.ensure_future(is_secret(outs["reporting_database_url"]))),
        pulumi.Output.from_input(asyncio.ensure_future(is_secret(outs["uptime_check"]))),
    ).apply(check)
