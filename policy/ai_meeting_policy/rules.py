"""Pure rule functions of the ai-meeting policy pack.

Each rule takes a `Res` (one resource as the engine shows it to an analyzer) and a `Ctx`
(which environment we are in, plus policy config) and yields what it found: a violation (a
`str`), or a `Deferred` note when the verdict depends on a value the engine does not know yet
(during a preview, anything computed from another resource's outputs). Nothing here imports
Pulumi, so every rule is unit tested with plain dicts (tests/policy/).

Unknown values arrive as `UNKNOWN` (pack.py converts the engine's sentinels). A rule never
treats UNKNOWN as "fine": it decides from what is known when it can (a loopback port is fine
whatever the labels say), and otherwise yields a `Deferred`. The mandatory policies report only
violations; the advisory `preview-unknowns` policy reports every deferred check, except a
container image taken from a RemoteImage of the stack (then image-pinned-tag judges the
RemoteImage's `name`, which is known in preview). Using UNKNOWN in a truth test raises
`UnknownInRule`, which the pack turns into a deferred note too: a rule cannot pass by accident.

Property names arrive camelCase from the engine (`logDriver`, `mustRun`); `prop()` also accepts
snake_case so tests and hand-written fixtures can use either.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"
BUILT_IMAGE = "docker:index/image:Image"
RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"
SELF_SIGNED_CERT = "tls:index/selfSignedCert:SelfSignedCert"
IMAGE_SOURCES = {REMOTE_IMAGE: "name", BUILT_IMAGE: "image_name"}

# Resource types holding generated secrets: replacing one silently changes a credential that
# PostgreSQL/Redis/MinIO only read at first initialisation (PITFALLS.md #10).
SECRET_TYPES = frozenset({RANDOM_PASSWORD})

LABEL_SERVICE = "ai-meeting.service"
LABEL_KIND = "ai-meeting.kind"
LABEL_DATA = "ai-meeting.data"

PUBLIC_SERVICES = frozenset({"nginx"})
RESTART_POLICIES = frozenset({"always", "unless-stopped", "on-failure"})
ROTATING_LOG_DRIVERS = frozenset({"json-file", "local"})
DEFAULT_MIN_PASSWORD_LENGTH = 32
DEFAULT_PROD_STACKS = ("prod",)
PROJECT = "ai-meeting"


# --------------------------------------------------------------------------- unknown values


class UnknownInRule(Exception):
    """A rule used a value that is unknown during preview as if it were known."""


class _Unknown:
    """A property value the engine does not know yet (computed from another resource's outputs
    during a preview). One instance, `UNKNOWN`; compare with `is_unknown()`."""

    _instance: Optional["_Unknown"] = None

    def __new__(cls) -> "_Unknown":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<unknown during preview>"

    def __bool__(self) -> bool:
        raise UnknownInRule("a value unknown during preview was used in a truth test")

    def __reduce__(self):
        return (_Unknown, ())


UNKNOWN = _Unknown()


def is_unknown(value: Any) -> bool:
    return value is UNKNOWN


@dataclass(frozen=True)
class Deferred:
    """A check a rule could not decide because `what` is not known yet (during a preview)."""

    rule: str
    ref: str
    what: str
    why: str = ""
    when: str = "before the resource is created or changed"

    @property
    def message(self) -> str:
        because = f" ({self.why})" if self.why else ""
        return (f"[{self.rule}] {self.ref}: {self.what} is not known during preview{because}; "
                f"not checked now: {self.rule} checks it during `pulumi up`, once the value is known, "
                f"{self.when}")

    def __str__(self) -> str:
        return self.message


Outcome = Union[str, Deferred]


@dataclass(frozen=True)
class Res:
    """One resource: its type token, logical name, URN, properties and `protect` option, plus
    (stack policies only) which resources each property depends on (property -> URNs)."""

    type: str
    name: str
    props: Mapping[str, Any]
    urn: str = ""
    protect: bool = False
    deps: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"'{self.name}' ({self.urn or self.type})"


@dataclass(frozen=True)
class Ctx:
    """Where the policy runs: the stack, the resolved environment and the policy's config."""

    stack: str = ""
    environment: str = "dev"
    config: Mapping[str, Any] = field(default_factory=dict)
    stack_config: Mapping[str, Any] = field(default_factory=dict)
    project: str = PROJECT

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def prop(props: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """props[key] by its camelCase (engine) or snake_case (SDK) spelling; may be UNKNOWN."""
    if is_unknown(props):
        return UNKNOWN
    for candidate in (_camel(key), key):
        if candidate in props and props[candidate] is not None:
            return props[candidate]
    return default


def labels_of(props: Mapping[str, Any]) -> dict[str, str]:
    """The known Docker labels as a dict, from the provider's `[{label, value}]` list (or a plain
    dict). Labels whose name or value is unknown are left out; see `label_value`."""
    raw = prop(props, "labels")
    if is_unknown(raw) or not raw:
        return {}
    if isinstance(raw, Mapping):
        return {str(k): str(v) for k, v in raw.items() if not is_unknown(v)}
    out: dict[str, str] = {}
    for item in raw:
        if isinstance(item, Mapping) and "label" in item:
            name, value = item["label"], item.get("value", "")
            if not is_unknown(name) and not is_unknown(value):
                out[str(name)] = str(value)
    return out


def label_value(props: Mapping[str, Any], key: str) -> Any:
    """One label's value: a str, None when the resource certainly does not have it, or UNKNOWN
    when the labels (or one label's name) are not known yet."""
    raw = prop(props, "labels")
    if is_unknown(raw):
        return UNKNOWN
    if not raw:
        return None
    if isinstance(raw, Mapping):
        value = raw.get(key)
        return value if value is None or is_unknown(value) else str(value)
    uncertain = False
    for item in raw:
        if is_unknown(item):
            uncertain = True
            continue
        if not isinstance(item, Mapping):
            continue
        name = item.get("label")
        if is_unknown(name):
            uncertain = True
        elif name == key:
            value = item.get("value", "")
            return value if is_unknown(value) else str(value)
    return UNKNOWN if uncertain else None


def service_of(res: Res) -> Any:
    """The `ai-meeting.service` label: a str, None, or UNKNOWN."""
    return label_value(res.props, LABEL_SERVICE)


def is_job(res: Res) -> Any:
    """One-shot containers (migrations, bucket creation) are exempt from long-running rules.
    True, False, or UNKNOWN when that depends on values not known yet."""
    kind = label_value(res.props, LABEL_KIND)
    if is_unknown(kind):
        return UNKNOWN
    if kind is not None:
        return kind == "job"
    # Unlabelled: a container that is not meant to keep running is a job.
    must_run, rm = prop(res.props, "must_run"), prop(res.props, "rm")
    if must_run is False or rm is True:
        return True
    if is_unknown(must_run) or is_unknown(rm):
        return UNKNOWN
    return False


def shown(value: Any) -> Any:
    """A value for a message: numbers arrive as floats over gRPC (5432.0); show 5432."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _is_loopback(ip: Optional[str]) -> bool:
    if not ip:
        return False  # docker binds to 0.0.0.0 when no ip is given
    if ip == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip.strip("[]")).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------- resource rules


def check_ports_loopback_only(res: Res, ctx: Ctx) -> Iterator[Outcome]:
    """Only nginx publishes ports beyond loopback; every other container binds 127.0.0.1."""
    if res.type != CONTAINER:
        return
    rule = "ports-loopback-only"
    service = service_of(res)
    if not is_unknown(service) and service in PUBLIC_SERVICES:
        return
    found: List[Outcome] = []
    ports = prop(res.props, "ports")
    if is_unknown(ports):
        found.append(Deferred(rule, res.ref, "ports"))
    for i, port in enumerate([] if is_unknown(ports) else ports or []):
        if is_unknown(port):
            found.append(Deferred(rule, res.ref, f"ports[{i}]"))
            continue
        ip = port.get("ip")
        if is_unknown(ip):
            found.append(Deferred(rule, res.ref, f"ports[{i}].ip"))
        elif not _is_loopback(ip):
            where = ip or "0.0.0.0 (no ip given)"
            found.append(f"[{rule}] container {res.ref} publishes port {shown(port.get('external', '?'))}->"
                         f"{shown(port.get('internal', '?'))} on {where}; only nginx may publish beyond 127.0.0.1")
    publish_all = prop(res.props, "publish_all_ports")
    if is_unknown(publish_all):
        found.append(Deferred(rule, res.ref, "publish_all_ports"))
    elif publish_all:
        found.append(f"[{rule}] container {res.ref} sets publish_all_ports; only nginx may publish ports")
    network_mode = prop(res.props, "network_mode")
    if is_unknown(network_mode):
        found.append(Deferred(rule, res.ref, "network_mode"))
    elif network_mode == "host":
        found.append(f"[{rule}] container {res.ref} uses network_mode=host, which exposes every port it opens")
    if is_unknown(service) and any(isinstance(f, str) for f in found):
        # It publishes beyond loopback; whether that is allowed depends on it being nginx.
        yield Deferred(rule, res.ref, f"label {LABEL_SERVICE}", "only nginx may publish beyond 127.0.0.1")
        yield from (f for f in found if isinstance(f, Deferred))
        return
    yield from found


def _long_running(res: Res, rule: str, found: List[Outcome]) -> Iterator[Outcome]:
    """`found` applies unless the container is a one-shot job; say so if that is not known."""
    if not found:
        return
    job = is_job(res)
    if job is True:
        return
    if is_unknown(job):
        if any(isinstance(f, str) for f in found):
            yield Deferred(rule, res.ref, f"label {LABEL_KIND} / must_run / rm",
                           "the rule applies unless it is a one-shot job")
        yield from (f for f in found if isinstance(f, Deferred))
        return
    yield from found


def check_healthcheck(res: Res, ctx: Ctx) -> Iterator[Outcome]:
    if res.type != CONTAINER:
        return
    rule = "container-healthcheck"
    missing = (f"[{rule}] long-running container {res.ref} has no healthcheck; "
               "add one (and wait=True) so a bad release is caught before it takes traffic")
    hc = prop(res.props, "healthcheck")
    found: List[Outcome] = []
    if is_unknown(hc):
        found.append(Deferred(rule, res.ref, "healthcheck"))
    else:
        tests = hc.get("tests") if isinstance(hc, Mapping) else None
        if is_unknown(tests):
            found.append(Deferred(rule, res.ref, "healthcheck.tests"))
        elif not tests:
            found.append(missing)
        elif is_unknown(tests[0]):
            found.append(Deferred(rule, res.ref, "healthcheck.tests[0]"))
        elif tests[0] == "NONE":
            found.append(missing)
    yield from _long_running(res, rule, found)


def check_restart_policy(res: Res, ctx: Ctx) -> Iterator[Outcome]:
    if res.type != CONTAINER:
        return
    rule = "container-restart-policy"
    restart = prop(res.props, "restart")
    found: List[Outcome] = []
    if is_unknown(restart):
        found.append(Deferred(rule, res.ref, "restart"))
    elif restart not in RESTART_POLICIES:
        found.append(f"[{rule}] long-running container {res.ref} has restart={restart!r}; "
                     f"use one of {sorted(RESTART_POLICIES)}")
    yield from _long_running(res, rule, found)


def _positive(value: Any) -> bool:
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return False


def check_resource_limits(res: Res, ctx: Ctx) -> Iterator[Outcome]:
    if res.type != CONTAINER:
        return
    rule = "container-resource-limits"
    found: List[Outcome] = []
    missing = []
    for key in ("cpus", "memory"):
        value = prop(res.props, key)
        if is_unknown(value):
            found.append(Deferred(rule, res.ref, key))
        elif not _positive(value):
            missing.append(key)
    if missing:
        found.append(f"[{rule}] long-running container {res.ref} has no "
                     f"{' or '.join(missing)} limit; set cpus (string) and memory (MB)")
    yield from _long_running(res, rule, found)


def check_log_rotation(res: Res, ctx: Ctx) -> Iterator[Outcome]:
    if res.type != CONTAINER:
        return
    rule = "container-log-rotation"
    driver = prop(res.props, "log_driver")
    opts = prop(res.props, "log_opts", {})
    found: List[Outcome] = []
    if is_unknown(driver):
        found.append(Deferred(rule, res.ref, "log_driver"))
    elif driver not in ROTATING_LOG_DRIVERS:
        found.append(f"[{rule}] long-running container {res.ref} has log_driver={driver!r}; "
                     "use json-file with log_opts max-size and max-file")
    elif driver == "json-file":
        if is_unknown(opts):
            found.append(Deferred(rule, res.ref, "log_opts"))
        else:
            values = [opts.get("max-size"), opts.get("max-file")]
            if any(v is None or v == "" for v in values):
                found.append(f"[{rule}] long-running container {res.ref} logs to json-file without "
                             "rotation; set log_opts max-size and max-file")
            elif any(is_unknown(v) for v in values):
                found.append(Deferred(rule, res.ref, "log_opts max-size / max-file"))
    yield from _long_running(res, rule, found)


def image_problem(ref: str) -> Optional[str]:
    """Why an image reference is not pinned, or None when it is (tag other than latest, or digest)."""
    ref = ref.strip()
    if not ref:
        return "is empty"
    if "@sha256:" in ref or ref.startswith("sha256:"):
        return None  # pinned by digest or by image id
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return "has no tag (means :latest)"
    tag = last.rsplit(":", 1)[1]
    if tag == "latest":
        return "uses the 'latest' tag"
    if not tag:
        return "has an empty tag"
    return None


IMAGE_KEYS = {CONTAINER: "image", **IMAGE_SOURCES}


def check_image_pinned(res: Res, ctx: Ctx) -> Iterator[Outcome]:
    """Container `image`, RemoteImage `name`, Image `image_name`: pinned by tag (not latest),
    digest or image id. A container's image that is not known yet (the id of a RemoteImage
    during a preview) is deferred here; `preview-unknowns` accepts it when it comes from a
    RemoteImage of the stack, whose `name` this rule checks."""
    key = IMAGE_KEYS.get(res.type)
    if key is None:
        return
    rule = "image-pinned-tag"
    kind = res.type.split(":")[-1]
    ref = prop(res.props, key)
    if is_unknown(ref):
        why = ("computed from another resource, normally a RemoteImage's id"
               if res.type == CONTAINER else "computed from another resource")
        yield Deferred(rule, res.ref, key, why)
        return
    if not isinstance(ref, str):
        yield f"[{rule}] {kind} {res.ref} has no image reference ({key}); pin a version tag or a digest"
        return
    problem = image_problem(ref)
    if problem:
        yield (f"[{rule}] {kind} {res.ref} image '{ref}' {problem}; "
               "pin a version tag or a digest")


def check_password_length(res: Res, ctx: Ctx) -> Iterator[Outcome]:
    if res.type != RANDOM_PASSWORD:
        return
    rule = "password-min-length"
    minimum = int(ctx.config.get("minLength", DEFAULT_MIN_PASSWORD_LENGTH))
    length = prop(res.props, "length")
    if is_unknown(length):
        yield Deferred(rule, res.ref, "length")
    elif isinstance(length, bool) or not isinstance(length, (int, float)) or length < minimum:
        yield (f"[{rule}] RandomPassword {res.ref} has length {shown(length)}; "
               f"generated passwords need at least {minimum} characters")


def is_data_volume(res: Res) -> Any:
    """True/False, or UNKNOWN for a volume whose labels are not known yet."""
    if res.type != VOLUME:
        return False
    value = label_value(res.props, LABEL_DATA)
    return UNKNOWN if is_unknown(value) else value == "true"


def check_prod_protected(res: Res, ctx: Ctx) -> Iterator[Outcome]:
    if not ctx.is_prod or res.protect:
        return
    rule = "prod-stateful-protected"
    data = is_data_volume(res)
    if is_unknown(data):
        yield Deferred(rule, res.ref, f"label {LABEL_DATA}", "unprotected volumes must not hold data in prod")
    elif data:
        yield (f"[{rule}] data volume {res.ref} is not protected in "
               f"{ctx.environment} (stack {ctx.stack or '?'}); set protect=True and retain_on_delete=True")
    elif res.type in SECRET_TYPES:
        yield (f"[{rule}] secret {res.ref} is not protected in "
               f"{ctx.environment} (stack {ctx.stack or '?'}); set protect=True so it is never regenerated")


# --------------------------------------------------------------------------- stack rules


def _config_value(stack_config: Mapping[str, Any], key: str, project: str) -> Any:
    for candidate in (f"{project}:{key}", f"{PROJECT}:{key}", key):
        if candidate in stack_config:
            raw = stack_config[candidate]
            if isinstance(raw, str):
                try:
                    return json.loads(raw)
                except ValueError:
                    return raw
            return raw
    return None


def tls_settings(stack_config: Mapping[str, Any], project: str = PROJECT) -> dict[str, Any]:
    """The program's `tls` config object (`<project>:tls`), decoded from the engine's JSON string."""
    raw = _config_value(stack_config, "tls", project)
    return dict(raw) if isinstance(raw, Mapping) else {}


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


STACK_CHECK_WHEN = "when the update has run (stack policies judge the stack's final state)"


def check_prod_tls(resources: Sequence[Res], ctx: Ctx) -> Iterator[Outcome]:
    """In prod TLS is on (nginx serves 443) and not self-signed unless explicitly allowed."""
    if not ctx.is_prod:
        return
    rule = "prod-tls-required"
    tls = tls_settings(ctx.stack_config, ctx.project)
    allow_self_signed = bool(
        _truthy(ctx.config.get("allowSelfSignedInProd"))
        # the program's key is top-level (`ai-meeting:allow_self_signed_in_prod`)
        or _truthy(_config_value(ctx.stack_config, "allow_self_signed_in_prod", ctx.project))
        or _truthy(tls.get("allow_self_signed_in_prod"))
        or _truthy(tls.get("allowSelfSignedInProd")))
    mode = tls.get("mode")
    if mode is not None and mode not in ("self-signed", "letsencrypt", "provided"):
        yield f"[{rule}] stack {ctx.stack} config tls.mode={mode!r}: TLS must be on in prod"
    elif mode == "self-signed" and not allow_self_signed:
        yield (f"[{rule}] stack {ctx.stack} config tls.mode='self-signed' in prod; use letsencrypt or "
               "provided (or set allow_self_signed_in_prod explicitly)")
    if not allow_self_signed:
        for res in resources:
            if res.type == SELF_SIGNED_CERT:
                yield (f"[{rule}] self-signed certificate {res.ref} in prod; use letsencrypt or provided")
    for res in resources:
        if res.type != CONTAINER:
            continue
        service = service_of(res)
        if not is_unknown(service) and service != "nginx":
            continue
        ports = prop(res.props, "ports")
        if is_unknown(ports):
            yield Deferred(rule, res.ref, "ports", "nginx must publish 443 in prod", STACK_CHECK_WHEN)
            continue
        internal = [p if is_unknown(p) else p.get("internal") for p in ports or []]
        if 443 in internal:
            continue
        if any(is_unknown(p) for p in internal) or is_unknown(service):
            yield Deferred(rule, res.ref, "ports" if not is_unknown(service) else f"label {LABEL_SERVICE}",
                           "nginx must publish 443 in prod", STACK_CHECK_WHEN)
        else:
            yield f"[{rule}] nginx container {res.ref} does not publish 443: TLS is off in prod"


RESOURCE_RULES = {
    "ports-loopback-only": (check_ports_loopback_only,
                            "Only nginx publishes ports beyond 127.0.0.1."),
    "container-healthcheck": (check_healthcheck,
                              "Every long-running container has a healthcheck."),
    "container-restart-policy": (check_restart_policy,
                                 "Every long-running container has a restart policy."),
    "container-resource-limits": (check_resource_limits,
                                  "Every long-running container has CPU and memory limits."),
    "container-log-rotation": (check_log_rotation,
                               "Every long-running container rotates its logs."),
    "image-pinned-tag": (check_image_pinned,
                         "No image uses the 'latest' tag or no tag (digests are fine)."),
    "password-min-length": (check_password_length,
                            "Generated passwords are at least 32 characters."),
    "prod-stateful-protected": (check_prod_protected,
                                "In prod, data volumes and secret resources are protected."),
}

STACK_RULES = {
    "prod-tls-required": (check_prod_tls,
                          "In prod, TLS is never off or self-signed."),
}

# Which resources each resource rule judges; for any other resource it is not applicable (the
# engine then counts it neither passed nor failed, so its summary says what was really judged).
LONG_RUNNING_RULES = frozenset({"container-healthcheck", "container-restart-policy",
                                "container-resource-limits", "container-log-rotation"})
RULE_TYPES = {
    "ports-loopback-only": frozenset({CONTAINER}),
    **{rule: frozenset({CONTAINER}) for rule in LONG_RUNNING_RULES},
    "image-pinned-tag": frozenset(IMAGE_KEYS),
    "password-min-length": frozenset({RANDOM_PASSWORD}),
    "prod-stateful-protected": frozenset({VOLUME} | SECRET_TYPES),
}


def not_applicable(rule: str, res: Res, ctx: Ctx) -> Optional[str]:
    """Why resource rule `rule` does not judge `res` at all, or None when it does."""
    types = RULE_TYPES[rule]
    if res.type not in types:
        return "judges " + ", ".join(sorted(t.rsplit(":", 1)[-1] for t in types)) + " resources only"
    if rule == "prod-stateful-protected" and not ctx.is_prod:
        return f"stack {ctx.stack or '?'} is {ctx.environment}, not prod"
    if rule in LONG_RUNNING_RULES and is_job(res) is True:
        return "a one-shot job, not a long-running container"
    return None


PREVIEW_UNKNOWNS = "preview-unknowns"
PREVIEW_UNKNOWNS_DESCRIPTION = ("Says which checks of the mandatory policies cannot be decided "
                                "during this preview (values computed from other resources).")


def image_source(res: Res, by_urn: Mapping[str, Res]) -> Optional[Res]:
    """The RemoteImage (or Image) of the stack that a container's `image` comes from, if any."""
    for urn in res.deps.get("image", ()):
        source = by_urn.get(urn)
        if source is not None and source.type in IMAGE_SOURCES:
            return source
    return None


def _outcomes(fn: Callable[..., Iterable[Outcome]], rule: str, ref: str, *args: Any) -> List[Outcome]:
    """Run one rule; a rule that trips over an unknown value is a deferred check, not a pass."""
    try:
        return list(fn(*args))
    except UnknownInRule as exc:
        return [Deferred(rule, ref, "a value it reads", str(exc))]


def resource_outcomes(rule: str, res: Res, ctx: Ctx) -> List[Outcome]:
    return _outcomes(RESOURCE_RULES[rule][0], rule, res.ref, res, ctx)


def check_preview_unknowns(resources: Sequence[Res], ctx: Ctx) -> Iterator[str]:
    """Every check of the other policies that this preview cannot decide, one message each.

    A container whose `image` is unknown because it is the id of a RemoteImage (or Image) of the
    stack is decided, not deferred: the image is that RemoteImage's, and image-pinned-tag judges
    its `name`. Any other unknown image is reported here."""
    by_urn = {r.urn: r for r in resources if r.urn}
    for res in resources:
        for rule in RESOURCE_RULES:
            for outcome in resource_outcomes(rule, res, ctx):
                if not isinstance(outcome, Deferred):
                    continue
                if (rule == "image-pinned-tag" and res.type == CONTAINER
                        and outcome.what == "image" and image_source(res, by_urn) is not None):
                    continue
                yield outcome.message
    for rule, (fn, _) in STACK_RULES.items():
        for outcome in _outcomes(fn, rule, f"stack {ctx.stack}", resources, ctx):
            if isinstance(outcome, Deferred):
                yield outcome.message


def resolve_environment(policy_config: Mapping[str, Any], stack: str,
                        environ: Mapping[str, str]) -> str:
    """Which environment a stack is, in order of precedence:

    1. the policy's config `environment` (`--policy-pack-config`),
    2. the `AI_MEETING_ENVIRONMENT` environment variable,
    3. the stack name: listed in the policy config `prodStacks` (default ["prod"]) or named
       `prod-*` means prod; any other stack is its own name (dev, staging, ...).
    """
    explicit = policy_config.get("environment") or environ.get("AI_MEETING_ENVIRONMENT")
    if explicit:
        return str(explicit)
    prod_stacks: Iterable[str] = policy_config.get("prodStacks") or DEFAULT_PROD_STACKS
    if stack in prod_stacks or stack.startswith("prod-"):
        return "prod"
    return stack or "dev"


def stack_config_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """The stack's config as the engine hands it to plugins (`PULUMI_CONFIG`, a JSON object)."""
    try:
        data = json.loads(environ.get("PULUMI_CONFIG", "") or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
