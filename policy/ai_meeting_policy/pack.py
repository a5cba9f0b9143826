"""Wraps the pure rules of `rules.py` into pulumi-policy Policy objects."""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, List, Mapping

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from . import rules
from .rules import Ctx, Res

PACK_NAME = "ai-meeting-guardrails"

# Every policy accepts these keys in `--policy-pack-config`, so an operator can pin the
# environment of a stack whose name does not say it (see docs/guardrails.md).
_ENV_SCHEMA = {
    "environment": {"type": "string", "enum": ["dev", "staging", "prod"]},
    "prodStacks": {"type": "array", "items": {"type": "string"}},
}
_EXTRA_SCHEMA: Mapping[str, Mapping[str, Any]] = {
    "password-min-length": {"minLength": {"type": "integer", "minimum": 1}},
    "prod-tls-required": {"allowSelfSignedInProd": {"type": "boolean"}},
}


def _stack_name() -> str:
    return os.environ.get("PULUMI_STACK", "")


def make_ctx(policy_config: Mapping[str, Any] | None, stack: str | None = None,
             environ: Mapping[str, str] | None = None) -> Ctx:
    environ = os.environ if environ is None else environ
    stack = _stack_name() if stack is None else stack
    config = dict(policy_config or {})
    return Ctx(stack=stack,
               environment=rules.resolve_environment(config, stack, environ),
               config=config,
               stack_config=rules.stack_config_from_env(environ))


def _schema(name: str) -> PolicyConfigSchema:
    return PolicyConfigSchema(properties={**_ENV_SCHEMA, **_EXTRA_SCHEMA.get(name, {})})


def _resource_policy(name: str, check: Callable[[Res, Ctx], Iterable[str]],
                     description: str) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation) -> None:
        res = Res(type=args.resource_type, name=args.name, props=args.props, urn=args.urn,
                  protect=bool(args.opts.protect) if args.opts is not None else False)
        for message in check(res, make_ctx(args.get_config())):
            report_violation(message, args.urn)

    return ResourceValidationPolicy(name=name, description=description, validate=validate,
                                    config_schema=_schema(name))


def _stack_policy(name: str, check, description: str) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation) -> None:
        resources = [Res(type=r.resource_type, name=r.name, props=r.props, urn=r.urn,
                         protect=bool(r.opts.protect) if r.opts is not None else False)
                     for r in args.resources]
        by_ref = {r.ref: r.urn for r in resources}
        for message in check(resources, make_ctx(args.get_config())):
            urn = next((u for ref, u in by_ref.items() if ref in message), None)
            report_violation(message, urn)

    return StackValidationPolicy(name=name, description=description, validate=validate,
                                 config_schema=_schema(name))


def build_policies() -> List[Any]:
    policies: List[Any] = [_resource_policy(n, fn, d) for n, (fn, d) in rules.RESOURCE_RULES.items()]
    policies += [_stack_policy(n, fn, d) for n, (fn, d) in rules.STACK_RULES.items()]
    return policies


def default_enforcement() -> EnforcementLevel:
    """Mandatory unless AI_MEETING_POLICY_ENFORCEMENT=advisory (e.g. to survey an old stack)."""
    level = os.environ.get("AI_MEETING_POLICY_ENFORCEMENT", "mandatory").lower()
    return {"advisory": EnforcementLevel.ADVISORY,
            "disabled": EnforcementLevel.DISABLED}.get(level, EnforcementLevel.MANDATORY)
