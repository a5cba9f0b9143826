"""Run one policy without the engine: build the args the analyzer would, collect the violations."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from typing import Any, Iterator, List, Mapping, Optional, Sequence, Tuple

from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.policy import _NotApplicableError

from .pack import forget_inputs


@contextmanager
def _engine_env(stack: str, stack_config: Optional[Mapping[str, Any]]) -> Iterator[None]:
    """Set what the engine sets for a policy pack process: PULUMI_STACK and PULUMI_CONFIG.
    Each run is its own deployment: inputs remembered by the pack do not carry over."""
    saved = {k: os.environ.get(k) for k in ("PULUMI_STACK", "PULUMI_CONFIG")}
    os.environ["PULUMI_STACK"] = stack
    os.environ["PULUMI_CONFIG"] = json.dumps(dict(stack_config or {}))
    forget_inputs()
    try:
        yield
    finally:
        forget_inputs()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _opts(protect: bool) -> PolicyResourceOptions:
    return PolicyResourceOptions(protect, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def _urn(resource_type: str, name: str, stack: str) -> str:
    return f"urn:pulumi:{stack}::ai-meeting::{resource_type}::{name}"


def _validate(policy: Any, args: Any, violations: list, not_applicable: Optional[list]) -> None:
    try:
        policy.validate(args, lambda message, urn=None: violations.append((message, urn)))
    except _NotApplicableError as exc:  # what the SDK turns into PolicyNotApplicable
        if not_applicable is not None:
            not_applicable.append(exc.reason)


def run_policy(policy: ResourceValidationPolicy, resource_type: str, props: Mapping[str, Any],
               name: str = "test", protect: bool = False, config: Optional[Mapping[str, Any]] = None,
               stack: str = "dev", stack_config: Optional[Mapping[str, Any]] = None,
               not_applicable: Optional[list] = None,
               ) -> List[Tuple[str, Optional[str]]]:
    """Violations (message, urn) that `policy` reports for one resource in stack `stack`; the
    reason it declared itself not applicable (a deferred check) is appended to `not_applicable`."""
    violations: List[Tuple[str, Optional[str]]] = []
    args = ResourceValidationArgs(resource_type, props, _urn(resource_type, name, stack), name,
                                  _opts(protect), None, config)
    with _engine_env(stack, stack_config):
        _validate(policy, args, violations, not_applicable)
    return violations


def run_stack_policy(policy: StackValidationPolicy,
                     resources: Sequence[Tuple[Any, ...]],
                     config: Optional[Mapping[str, Any]] = None,
                     stack: str = "dev", stack_config: Optional[Mapping[str, Any]] = None,
                     not_applicable: Optional[list] = None,
                     ) -> List[Tuple[str, Optional[str]]]:
    """Violations of a stack policy over (type, name, props[, property_deps]) resources in stack
    `stack`; property_deps maps a property to the logical names of the resources it comes from."""
    violations: List[Tuple[str, Optional[str]]] = []
    urns = {r[1]: _urn(r[0], r[1], stack) for r in resources}
    res = [PolicyResource(r[0], r[2], urns[r[1]], r[1], _opts(False), None, None, [], {})
           for r in resources]
    by_name = {r.name: r for r in res}
    for r, spec in zip(res, resources):
        deps = spec[3] if len(spec) > 3 else {}
        r.property_dependencies.update({k: [by_name[n] for n in names] for k, names in deps.items()})
    args = StackValidationArgs(res, config)
    with _engine_env(stack, stack_config):
        _validate(policy, args, violations, not_applicable)
    return violations
