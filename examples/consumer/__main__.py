"""Reads the ai-meeting stack's outputs with a StackReference and derives two things from them
(see consumer_lib.consumer_outputs): an uptime-check definition and a secret reporting DSN."""

import pulumi

from consumer_lib import consumer_outputs

config = pulumi.Config()
# On a self-hosted backend (file://, s3://) the organization is always "organization".
infra_stack = config.get("infraStack") or f"organization/ai-meeting/{pulumi.get_stack()}"
infra = pulumi.StackReference("ai-meeting", stack_name=infra_stack)

pulumi.export("infra_stack", infra_stack)
for key, value in consumer_outputs(infra, pulumi.get_stack()).items():
    pulumi.export(key, value)
