"""Wraps the pure rules of `rules.py` into pulumi-policy Policy objects, and starts the pack."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping as AbcMapping
from collections.abc import Sequence as AbcSequence
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyPack,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import (
    UNKNOWN_ARCHIVE_VALUE,
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
    UnknownValueError,
)

from . import rules
from .rules import UNKNOWN, Ctx, Deferred, Res

PACK_NAME = "ai-meeting-guardrails"
PACK_DIR = Path(__file__).resolve().parents[1]

# The engine's sentinels for values not known during a preview (pulumi sdk/go/common/resource/sig).
UNKNOWN_SENTINELS = frozenset({UNKNOWN_BOOLEAN_VALUE, UNKNOWN_NUMBER_VALUE, UNKNOWN_STRING_VALUE,
                               UNKNOWN_ARRAY_VALUE, UNKNOWN_ASSET_VALUE, UNKNOWN_ARCHIVE_VALUE,
                               UNKNOWN_OBJECT_VALUE})

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


def pack_version(policy_yaml: Optional[Path] = None) -> str:
    """The pack's version: `version:` in PulumiPolicy.yaml, the one place it is written.

    The CLI (pkg/resource/plugin/analyzer_plugin.go, v3.274.1) reads the same key and puts it
    on every diagnostic and on the pack's info. pulumi-policy 1.21 (Python) itself always says
    "0.0.1" (PolicyPack.__init__), which is what would leak into its own texts (e.g. "can't run
    policy ... @v0.0.1 during preview") and what the pack answers over gRPC, so `serve()` gives
    the SDK this version instead."""
    text = (policy_yaml or PACK_DIR / "PulumiPolicy.yaml").read_text(encoding="utf-8")
    match = re.search(r"^version:\s*['\"]?([^'\"\s#]+)", text, re.M)
    if not match:
        raise RuntimeError(f"no version in {policy_yaml or PACK_DIR / 'PulumiPolicy.yaml'}")
    return match.group(1)


# ----------------------------------------------------------------------- engine values -> plain


def plain(value: Any) -> Any:
    """The engine's (proxied) property values as plain dicts/lists, unknowns as `rules.UNKNOWN`.

    pulumi-policy hands rules a proxy that raises UnknownValueError when an unknown is read; the
    SDK then skips the whole policy with an advisory "can't run policy" and counts it as passed.
    Reading every value here, once, lets each rule decide (or say it cannot) instead."""
    if isinstance(value, str):
        return UNKNOWN if value in UNKNOWN_SENTINELS else value
    if isinstance(value, AbcMapping):
        out: Dict[str, Any] = {}
        for key in list(value):
            try:
                out[key] = plain(value[key])
            except UnknownValueError:
                out[key] = UNKNOWN
        return out
    if isinstance(value, AbcSequence) and not isinstance(value, (bytes, bytearray)):
        items: List[Any] = []
        for i in range(len(value)):
            try:
                items.append(plain(value[i]))
            except UnknownValueError:
                items.append(UNKNOWN)
        return items
    return value


# Inputs of every resource analyzed by this pack process, by URN. The engine calls Analyze on
# each resource's inputs as it is registered, and AnalyzeStack once at the end on the
# resources' outputs (with their property dependencies); the `preview-unknowns` stack policy
# judges the inputs, like the resource policies did.
_INPUTS: Dict[str, Mapping[str, Any]] = {}
_INPUTS_LOCK = threading.Lock()


def _remember_inputs(urn: str, props: Mapping[str, Any]) -> None:
    if urn:
        with _INPUTS_LOCK:
            _INPUTS[urn] = props


def forget_inputs() -> None:
    """Start over (tests: each run is its own deployment)."""
    with _INPUTS_LOCK:
        _INPUTS.clear()


def seen_inputs(urn: str) -> Optional[Mapping[str, Any]]:
    with _INPUTS_LOCK:
        return _INPUTS.get(urn)


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
               stack_config=rules.stack_config_from_env(environ),
               project=environ.get("PULUMI_PROJECT") or rules.PROJECT)


def _schema(name: str) -> PolicyConfigSchema:
    return PolicyConfigSchema(properties={**_ENV_SCHEMA, **_EXTRA_SCHEMA.get(name, {})})


def _protect(opts: Any) -> bool:
    return bool(opts.protect) if opts is not None else False


def _resource_policy(name: str, description: str,
                     enforcement_level: Optional[EnforcementLevel] = None) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation) -> None:
        props = plain(args.props)
        _remember_inputs(args.urn, props)
        res = Res(type=args.resource_type, name=args.name, props=props, urn=args.urn,
                  protect=_protect(args.opts))
        ctx = make_ctx(args.get_config())
        reason = rules.not_applicable(name, res, ctx)
        if reason:
            args.not_applicable(reason)
        _verdict(rules.resource_outcomes(name, res, ctx), args,
                 lambda message: report_violation(message, args.urn))

    return ResourceValidationPolicy(name=name, description=description, validate=validate,
                                    config_schema=_schema(name), enforcement_level=enforcement_level)


def _verdict(outcomes: List[Any], args: Any, report: Callable[[str], None]) -> None:
    """Violations fail the policy. Checks deferred (values unknown in this preview) and no
    violation: the policy is "not applicable" to this resource now, so the engine does not count
    it as passed either; `preview-unknowns` says which check and why (advisory)."""
    violations = [o for o in outcomes if not isinstance(o, Deferred)]
    for message in violations:
        report(message)
    deferred = [o for o in outcomes if isinstance(o, Deferred)]
    if deferred and not violations:
        args.not_applicable("; ".join(d.message for d in deferred))


def stack_resources(args: StackValidationArgs, use_seen_inputs: bool = False) -> List[Res]:
    out = []
    for r in args.resources:
        props = (seen_inputs(r.urn) if use_seen_inputs else None) or plain(r.props)
        deps = {key: [d.urn for d in value] for key, value in (r.property_dependencies or {}).items()}
        out.append(Res(type=r.resource_type, name=r.name, props=props, urn=r.urn,
                       protect=_protect(r.opts), deps=deps))
    return out


def _report_stack(messages: Iterable[Any], resources: List[Res], report_violation) -> None:
    by_ref = {r.ref: r.urn for r in resources}
    for message in messages:
        text = str(message)
        urn = next((u for ref, u in by_ref.items() if ref in text), None)
        report_violation(text, urn)


def _stack_policy(name: str, check: Callable, description: str) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation) -> None:
        resources = stack_resources(args)
        outcomes = rules._outcomes(check, name, "stack", resources, make_ctx(args.get_config()))
        _verdict(outcomes, args, lambda message: _report_stack([message], resources, report_violation))

    return StackValidationPolicy(name=name, description=description, validate=validate,
                                 config_schema=_schema(name))


def _preview_unknowns_policy(level: EnforcementLevel) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation) -> None:
        resources = stack_resources(args, use_seen_inputs=True)
        _report_stack(rules.check_preview_unknowns(resources, make_ctx(args.get_config())),
                      resources, report_violation)

    return StackValidationPolicy(name=rules.PREVIEW_UNKNOWNS, description=rules.PREVIEW_UNKNOWNS_DESCRIPTION,
                                 validate=validate, config_schema=_schema(rules.PREVIEW_UNKNOWNS),
                                 enforcement_level=level)


def build_policies() -> List[Any]:
    policies: List[Any] = [_resource_policy(n, d) for n, (_, d) in rules.RESOURCE_RULES.items()]
    policies += [_stack_policy(n, fn, d) for n, (fn, d) in rules.STACK_RULES.items()]
    # Never mandatory: it says what the preview could not check; `up` checks it.
    disabled = default_enforcement() == EnforcementLevel.DISABLED
    policies.append(_preview_unknowns_policy(EnforcementLevel.DISABLED if disabled else EnforcementLevel.ADVISORY))
    return policies


def default_enforcement() -> EnforcementLevel:
    """Mandatory unless AI_MEETING_POLICY_ENFORCEMENT=advisory (e.g. to survey an old stack)."""
    level = os.environ.get("AI_MEETING_POLICY_ENFORCEMENT", "mandatory").lower()
    return {"advisory": EnforcementLevel.ADVISORY,
            "disabled": EnforcementLevel.DISABLED}.get(level, EnforcementLevel.MANDATORY)


def _give_sdk_the_version(version: str) -> None:
    """pulumi-policy 1.21 builds its analyzer servicer with a hard-coded "0.0.1"; give it ours.

    The servicer class is private, so this touches nothing when it is not there or takes other
    arguments (tests/policy/test_pack_grpc.py then fails on the version the pack reports)."""
    import inspect

    import pulumi_policy.policy as impl

    base = getattr(impl, "_PolicyAnalyzerServicer", None)
    if base is None or getattr(base, "_ai_meeting_version", None) is not None:
        return
    params = list(inspect.signature(base.__init__).parameters)
    if params[:3] != ["self", "name", "version"]:
        return

    class _Servicer(base):  # type: ignore[misc, valid-type]
        _ai_meeting_version = version

        def __init__(self, name, _sdk_version, *args, **kwargs):
            super().__init__(name, version, *args, **kwargs)

    impl._PolicyAnalyzerServicer = _Servicer


def serve() -> None:
    """Start the pack as the engine's analyzer plugin (policy/__main__.py); never returns."""
    _give_sdk_the_version(pack_version())
    PolicyPack(
        name=PACK_NAME,
        enforcement_level=default_enforcement(),
        policies=build_policies(),
    )
