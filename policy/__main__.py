"""ai-meeting guardrails policy pack (see docs/guardrails.md).

Every policy is mandatory unless AI_MEETING_POLICY_ENFORCEMENT=advisory or the pack config says
otherwise. The environment (prod or not) comes from the policy config `environment`, else
AI_MEETING_ENVIRONMENT, else the stack name (`prod`, `prod-*`, or one listed in `prodStacks`).
"""

from pulumi_policy import PolicyPack

from ai_meeting_policy.pack import PACK_NAME, build_policies, default_enforcement

PolicyPack(
    name=PACK_NAME,
    enforcement_level=default_enforcement(),
    policies=build_policies(),
)
