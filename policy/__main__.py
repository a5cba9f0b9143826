"""ai-meeting guardrails policy pack (see docs/guardrails.md).

Every policy is mandatory unless AI_MEETING_POLICY_ENFORCEMENT=advisory or the pack config says
otherwise; `preview-unknowns` is always advisory. The environment (prod or not) comes from the
policy config `environment`, else AI_MEETING_ENVIRONMENT, else the stack name (`prod`, `prod-*`,
or one listed in `prodStacks`). The version is PulumiPolicy.yaml's `version`.
"""

from ai_meeting_policy.pack import serve

serve()
