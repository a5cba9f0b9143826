"""Reads the ai-meeting stack's outputs with a StackReference and derives two things from them:

- `uptime_check`: the definition an uptime monitor needs (plain: URLs are not secret),
- `reporting_database_url`: a connection string for a reporting job, derived from the secret
  `database_url`; it stays a secret because it is computed from one (and we say so explicitly).
"""

import pulumi

from consumer_lib import reporting_dsn, uptime_check

config = pulumi.Config()
infra_stack = config.get("infraStack") or f"organization/ai-meeting/{pulumi.get_stack()}"
infra = pulumi.StackReference("ai-meeting", stack_name=infra_stack)

public_url = infra.require_output("public_url")
health_url = infra.get_output("health_url")
database_url = infra.require_output("database_url")

pulumi.export("infra_stack", infra_stack)
pulumi.export("uptime_check", pulumi.Output.all(public_url, health_url).apply(
    lambda urls: uptime_check(pulumi.get_stack(), urls[0], urls[1])))
pulumi.export("reporting_database_url",
              pulumi.Output.secret(database_url.apply(lambda url: reporting_dsn(url, "uptime-reporter"))))
