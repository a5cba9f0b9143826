"""Pure rule functions of the ai-meeting policy pack.

Each rule takes a `Res` (one resource as the engine shows it to an analyzer) and a `Ctx`
(which environment we are in, plus policy config) and yields violation messages. Nothing here
imports Pulumi, so every rule is unit tested with plain dicts (tests/policy/).

Property names arrive camelCase from the engine (`logDriver`, `mustRun`); `prop()` also accepts
snake_case so tests and hand-written fixtures can use either.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"
BUILT_IMAGE = "docker:index/image:Image"
RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"
SELF_SIGNED_CERT = "tls:index/selfSignedCert:SelfSignedCert"

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


@dataclass(frozen=True)
class Res:
    """One resource: its type token, logical name, URN, input properties and `protect` option."""

    type: str
    name: str
    props: Mapping[str, Any]
    urn: str = ""
    protect: bool = False

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

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def prop(props: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """props[key] by its camelCase (engine) or snake_case (SDK) spelling."""
    for candidate in (_camel(key), key):
        if candidate in props and props[candidate] is not None:
            return props[candidate]
    return default


def labels_of(props: Mapping[str, Any]) -> dict[str, str]:
    """Docker labels as a dict, from the provider's `[{label, value}]` list (or a plain dict)."""
    raw = prop(props, "labels") or []
    if isinstance(raw, Mapping):
        return {str(k): str(v) for k, v in raw.items()}
    out: dict[str, str] = {}
    for item in raw:
        if isinstance(item, Mapping) and "label" in item:
            out[str(item["label"])] = str(item.get("value", ""))
    return out


def service_of(res: Res) -> str:
    return labels_of(res.props).get(LABEL_SERVICE, "")


def is_job(res: Res) -> bool:
    """One-shot containers (migrations, bucket creation) are exempt from long-running rules."""
    kind = labels_of(res.props).get(LABEL_KIND)
    if kind is not None:
        return kind == "job"
    # Unlabelled: a container that is not meant to keep running is a job.
    return prop(res.props, "must_run") is False or prop(res.props, "rm") is True


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


def check_ports_loopback_only(res: Res, ctx: Ctx) -> Iterator[str]:
    """Only nginx publishes ports beyond loopback; every other container binds 127.0.0.1."""
    if res.type != CONTAINER or service_of(res) in PUBLIC_SERVICES:
        return
    rule = "ports-loopback-only"
    for port in prop(res.props, "ports") or []:
        ip = port.get("ip")
        if not _is_loopback(ip):
            shown = ip or "0.0.0.0 (no ip given)"
            yield (f"[{rule}] container {res.ref} publishes port {port.get('external', '?')}->"
                   f"{port.get('internal', '?')} on {shown}; only nginx may publish beyond 127.0.0.1")
    if prop(res.props, "publish_all_ports"):
        yield f"[{rule}] container {res.ref} sets publish_all_ports; only nginx may publish ports"
    if prop(res.props, "network_mode") == "host":
        yield f"[{rule}] container {res.ref} uses network_mode=host, which exposes every port it opens"


def check_healthcheck(res: Res, ctx: Ctx) -> Iterator[str]:
    if res.type != CONTAINER or is_job(res):
        return
    hc = prop(res.props, "healthcheck") or {}
    tests = list(hc.get("tests") or []) if isinstance(hc, Mapping) else []
    if not tests or tests[0] == "NONE":
        yield (f"[container-healthcheck] long-running container {res.ref} has no healthcheck; "
               "add one (and wait=True) so a bad release is caught before it takes traffic")


def check_restart_policy(res: Res, ctx: Ctx) -> Iterator[str]:
    if res.type != CONTAINER or is_job(res):
        return
    restart = prop(res.props, "restart")
    if restart not in RESTART_POLICIES:
        yield (f"[container-restart-policy] long-running container {res.ref} has restart={restart!r}; "
               f"use one of {sorted(RESTART_POLICIES)}")


def _positive(value: Any) -> bool:
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return False


def check_resource_limits(res: Res, ctx: Ctx) -> Iterator[str]:
    if res.type != CONTAINER or is_job(res):
        return
    missing = [k for k in ("cpus", "memory") if not _positive(prop(res.props, k))]
    if missing:
        yield (f"[container-resource-limits] long-running container {res.ref} has no "
               f"{' or '.join(missing)} limit; set cpus (string) and memory (MB)")


def check_log_rotation(res: Res, ctx: Ctx) -> Iterator[str]:
    if res.type != CONTAINER or is_job(res):
        return
    rule = "container-log-rotation"
    driver = prop(res.props, "log_driver")
    opts = prop(res.props, "log_opts") or {}
    if driver not in ROTATING_LOG_DRIVERS:
        yield (f"[{rule}] long-running container {res.ref} has log_driver={driver!r}; "
               "use json-file with log_opts max-size and max-file")
    elif driver == "json-file" and not (opts.get("max-size") and opts.get("max-file")):
        yield (f"[{rule}] long-running container {res.ref} logs to json-file without rotation; "
               "set log_opts max-size and max-file")


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


def check_image_pinned(res: Res, ctx: Ctx) -> Iterator[str]:
    key = {CONTAINER: "image", REMOTE_IMAGE: "name", BUILT_IMAGE: "image_name"}.get(res.type)
    if key is None:
        return
    ref = prop(res.props, key)
    if not isinstance(ref, str):
        return
    problem = image_problem(ref)
    if problem:
        yield (f"[image-pinned-tag] {res.type.split(':')[-1]} {res.ref} image '{ref}' {problem}; "
               "pin a version tag or a digest")


def check_password_length(res: Res, ctx: Ctx) -> Iterator[str]:
    if res.type != RANDOM_PASSWORD:
        return
    minimum = int(ctx.config.get("minLength", DEFAULT_MIN_PASSWORD_LENGTH))
    length = prop(res.props, "length")
    if not isinstance(length, (int, float)) or length < minimum:
        yield (f"[password-min-length] RandomPassword {res.ref} has length {length}; "
               f"generated passwords need at least {minimum} characters")


def is_data_volume(res: Res) -> bool:
    return res.type == VOLUME and labels_of(res.props).get(LABEL_DATA) == "true"


def check_prod_protected(res: Res, ctx: Ctx) -> Iterator[str]:
    if not ctx.is_prod or res.protect:
        return
    if is_data_volume(res):
        yield (f"[prod-stateful-protected] data volume {res.ref} is not protected in "
               f"{ctx.environment} (stack {ctx.stack or '?'}); set protect=True and retain_on_delete=True")
    elif res.type in SECRET_TYPES:
        yield (f"[prod-stateful-protected] secret {res.ref} is not protected in "
               f"{ctx.environment} (stack {ctx.stack or '?'}); set protect=True so it is never regenerated")


# --------------------------------------------------------------------------- stack rules


def tls_settings(stack_config: Mapping[str, Any], project: str = "ai-meeting") -> dict[str, Any]:
    """The program's `tls` config object (`<project>:tls`), decoded from the engine's JSON string."""
    raw = stack_config.get(f"{project}:tls", stack_config.get("tls"))
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return dict(raw) if isinstance(raw, Mapping) else {}


def check_prod_tls(resources: Sequence[Res], ctx: Ctx) -> Iterator[str]:
    """In prod TLS is on (nginx serves 443) and not self-signed unless explicitly allowed."""
    if not ctx.is_prod:
        return
    rule = "prod-tls-required"
    tls = tls_settings(ctx.stack_config)
    allow_self_signed = bool(
        ctx.config.get("allowSelfSignedInProd")
        or tls.get("allow_self_signed_in_prod")
        or tls.get("allowSelfSignedInProd"))
    mode = tls.get("mode")
    if mode is not None and mode not in ("self-signed", "letsencrypt", "provided"):
        yield f"[{rule}] stack {ctx.stack} config tls.mode={mode!r}: TLS must be on in prod"
    elif mode == "self-signed" and not allow_self_signed:
        yield (f"[{rule}] stack {ctx.stack} config tls.mode='self-signed' in prod; use letsencrypt or "
               "provided (or set tls.allow_self_signed_in_prod explicitly)")
    if not allow_self_signed:
        for res in resources:
            if res.type == SELF_SIGNED_CERT:
                yield (f"[{rule}] self-signed certificate {res.ref} in prod; use letsencrypt or provided")
    for res in resources:
        if res.type == CONTAINER and service_of(res) == "nginx":
            internal = {p.get("internal") for p in prop(res.props, "ports") or []}
            if 443 not in internal:
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
