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
container's (or swarm service's) image taken from a RemoteImage of the stack (then
image-pinned-tag judges the RemoteImage's `name`, which is known in preview).

The container rules judge a `docker.Service` (target.kind swarm) too, reading its task's
nested spec (`task_spec.container_spec.image`, ...); see docs/guardrails.md for what ports
and data mean on a swarm. Using UNKNOWN in a truth test raises
`UnknownInRule`, which the pack turns into a deferred note too: a rule cannot pass by accident.

Property names arrive camelCase from the engine (`logDriver`, `mustRun`, `taskSpec.containerSpec`);
`prop()` (and `nested()` for dotted paths) also accepts snake_case so tests and hand-written
fixtures can use either.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

CONTAINER = "docker:index/container:Container"
SERVICE = "docker:index/service:Service"  # target.kind swarm: one per service, its tasks are containers
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
# What the edge (nginx) publishes on a swarm: a published port answers on every node's
# interfaces (there is no 127.0.0.1 on a swarm), so nothing else is ever published there.
EDGE_TARGET_PORTS = frozenset({80, 443})
# Services whose tasks hold the stack's data (by their `ai-meeting.service` label).
DATA_SERVICES = frozenset({"postgres", "redis", "minio"})
RESTART_POLICIES = frozenset({"always", "unless-stopped", "on-failure"})
# A swarm task's restart condition; none given means Docker's default, `any`.
SERVICE_RESTART_CONDITIONS = frozenset({"any", "on-failure"})
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


def nested(props: Any, path: str, default: Any = None) -> Any:
    """The value at a dotted snake_case path (`task_spec.container_spec.image`) of nested
    objects, each key read as `prop()` reads it: UNKNOWN when the value or an object on the way
    is not known yet, `default` when a key is absent."""
    value = props
    for key in path.split("."):
        if is_unknown(value):
            return UNKNOWN
        if not isinstance(value, Mapping):
            return default
        value = prop(value, key)
        if value is None:
            return default
    return value


def kind_of(res: Res) -> str:
    """How a message names the resource: container, service, RemoteImage, ..."""
    return {CONTAINER: "container", SERVICE: "service"}.get(res.type, res.type.split(":")[-1])


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
    """One-shot containers (migrations, bucket creation) and never-started ones (the carriers of a
    read-only container's files, kind `files`) are exempt from long-running rules.
    True, False, or UNKNOWN when that depends on values not known yet."""
    kind = label_value(res.props, LABEL_KIND)
    if is_unknown(kind):
        return UNKNOWN
    if kind is not None:
        return kind in ("job", "files")
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
    """Only nginx publishes ports beyond loopback; every other container binds 127.0.0.1.
    A swarm service has no loopback to bind (see `_check_service_ports`)."""
    if res.type == SERVICE:
        yield from _check_service_ports(res, ctx)
        return
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
    yield from _unless_nginx(res, rule, service, found, "only nginx may publish beyond 127.0.0.1")


def _unless_nginx(res: Res, rule: str, service: Any, found: List[Outcome], why: str) -> Iterator[Outcome]:
    """`found` stands when the service label is known; when it is not, a violation that nginx
    would be allowed becomes a deferred check of the label."""
    if is_unknown(service) and any(isinstance(f, str) for f in found):
        yield Deferred(rule, res.ref, f"label {LABEL_SERVICE}", why)
        yield from (f for f in found if isinstance(f, Deferred))
        return
    yield from found


def _check_service_ports(res: Res, ctx: Ctx) -> Iterator[Outcome]:
    """A swarm service publishes a port on every node's interfaces (ingress) or on each node
    that runs a task (host mode): there is no 127.0.0.1 on a swarm. So only nginx (the edge)
    publishes, and only its 80 and 443; a data service publishing anything puts the database
    on the network. Everything else reaches the services over the overlay network. A service
    on Docker's `host` network exposes every port it opens."""
    rule = "ports-loopback-only"
    service = service_of(res)
    edge = not is_unknown(service) and service in PUBLIC_SERVICES
    what = "data service" if not is_unknown(service) and service in DATA_SERVICES else "service"
    found: List[Outcome] = []  # violations unless the service is nginx
    always: List[Outcome] = []  # violations whatever the label says
    ports = nested(res.props, "endpoint_spec.ports")
    if is_unknown(ports):
        always.append(Deferred(rule, res.ref, "endpoint_spec.ports"))
    for i, port in enumerate([] if is_unknown(ports) else ports or []):
        if is_unknown(port) or not isinstance(port, Mapping):
            always.append(Deferred(rule, res.ref, f"endpoint_spec.ports[{i}]"))
            continue
        target, published = prop(port, "target_port"), prop(port, "published_port")
        mode = prop(port, "publish_mode", "ingress")
        mode = "?" if is_unknown(mode) else mode
        outside = "?" if published is None or is_unknown(published) else shown(published)
        if is_unknown(target):
            if edge:
                always.append(Deferred(rule, res.ref, f"endpoint_spec.ports[{i}].target_port",
                                       "nginx publishes only 80 and 443"))
            else:
                found.append(f"[{rule}] {what} {res.ref} publishes a port ({mode} mode); "
                             "only nginx publishes on a swarm, and only 80 and 443")
        elif shown(target) not in EDGE_TARGET_PORTS:
            always.append(f"[{rule}] {what} {res.ref} publishes port {outside}->{shown(target)} ({mode} mode) on "
                          "every node it runs on; a swarm has no 127.0.0.1: only nginx publishes, and only 80 "
                          "and 443 (reach the others over the overlay network)")
        else:
            found.append(f"[{rule}] {what} {res.ref} publishes port {outside}->{shown(target)} ({mode} mode); "
                         "only nginx publishes on a swarm (reach the others over the overlay network)")
    networks = nested(res.props, "task_spec.networks_advanceds")
    if is_unknown(networks):
        always.append(Deferred(rule, res.ref, "task_spec.networks_advanceds"))
    for i, net in enumerate([] if is_unknown(networks) else networks or []):
        name = nested(net, "name")
        if is_unknown(name):
            always.append(Deferred(rule, res.ref, f"task_spec.networks_advanceds[{i}].name"))
        elif name == "host":
            always.append(f"[{rule}] {what} {res.ref} is on the host network, which exposes every port it opens")
    yield from always
    if not edge:
        yield from _unless_nginx(res, rule, service, found, "only nginx publishes on a swarm")


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


# Where each long-running rule reads a swarm service (its task's container spec).
SERVICE_HEALTHCHECK = "task_spec.container_spec.healthcheck"
SERVICE_RESTART = "task_spec.restart_policy.condition"
SERVICE_LIMITS = "task_spec.resources.limits"
SERVICE_LOG_DRIVER = "task_spec.log_driver"


def check_healthcheck(res: Res, ctx: Ctx) -> Iterator[Outcome]:
    if res.type not in (CONTAINER, SERVICE):
        return
    rule = "container-healthcheck"
    key = "healthcheck" if res.type == CONTAINER else SERVICE_HEALTHCHECK
    missing = (f"[{rule}] long-running {kind_of(res)} {res.ref} has no healthcheck ({key}); "
               "add one (and wait=True) so a bad release is caught before it takes traffic"
               if res.type == CONTAINER else
               f"[{rule}] long-running service {res.ref} has no healthcheck ({key}); add one so Swarm "
               "rolls a bad release back before it takes traffic")
    hc = nested(res.props, key)
    found: List[Outcome] = []
    if is_unknown(hc):
        found.append(Deferred(rule, res.ref, key))
    else:
        tests = hc.get("tests") if isinstance(hc, Mapping) else None
        if is_unknown(tests):
            found.append(Deferred(rule, res.ref, f"{key}.tests"))
        elif not tests:
            found.append(missing)
        elif is_unknown(tests[0]):
            found.append(Deferred(rule, res.ref, f"{key}.tests[0]"))
        elif tests[0] == "NONE":
            found.append(missing)
    yield from _long_running(res, rule, found)


def check_restart_policy(res: Res, ctx: Ctx) -> Iterator[Outcome]:
    if res.type not in (CONTAINER, SERVICE):
        return
    rule = "container-restart-policy"
    found: List[Outcome] = []
    if res.type == SERVICE:
        # No condition given: Docker restarts a swarm task on any exit (`any`), unlike a
        # container (whose default is `no`).
        condition = nested(res.props, SERVICE_RESTART, "any")
        if is_unknown(condition):
            found.append(Deferred(rule, res.ref, SERVICE_RESTART))
        elif condition not in SERVICE_RESTART_CONDITIONS:
            found.append(f"[{rule}] long-running service {res.ref} has {SERVICE_RESTART}={condition!r}; "
                         f"use one of {sorted(SERVICE_RESTART_CONDITIONS)}")
        yield from _long_running(res, rule, found)
        return
    restart = prop(res.props, "restart")
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
    if res.type not in (CONTAINER, SERVICE):
        return
    rule = "container-resource-limits"
    found: List[Outcome] = []
    missing = []
    if res.type == SERVICE:
        keys = [f"{SERVICE_LIMITS}.{k}" for k in ("nano_cpus", "memory_bytes")]
        how = f"set {SERVICE_LIMITS} nano_cpus and memory_bytes"
    else:
        keys, how = ["cpus", "memory"], "set cpus (string) and memory (MB)"
    for key in keys:
        value = nested(res.props, key)
        if is_unknown(value):
            found.append(Deferred(rule, res.ref, key))
        elif not _positive(value):
            missing.append(key.rsplit(".", 1)[-1])
    if missing:
        found.append(f"[{rule}] long-running {kind_of(res)} {res.ref} has no "
                     f"{' or '.join(missing)} limit; {how}")
    yield from _long_running(res, rule, found)


def check_log_rotation(res: Res, ctx: Ctx) -> Iterator[Outcome]:
    if res.type not in (CONTAINER, SERVICE):
        return
    rule = "container-log-rotation"
    if res.type == SERVICE:
        driver_key, opts_key = f"{SERVICE_LOG_DRIVER}.name", f"{SERVICE_LOG_DRIVER}.options"
        how = f"{SERVICE_LOG_DRIVER} name json-file with options max-size and max-file"
    else:
        driver_key, opts_key, how = "log_driver", "log_opts", "log_driver json-file with log_opts max-size and max-file"
    driver = nested(res.props, driver_key)
    opts = nested(res.props, opts_key, {})
    found: List[Outcome] = []
    if is_unknown(driver):
        found.append(Deferred(rule, res.ref, driver_key))
    elif driver not in ROTATING_LOG_DRIVERS:
        found.append(f"[{rule}] long-running {kind_of(res)} {res.ref} has {driver_key}={driver!r}; use {how}")
    elif driver == "json-file":
        if is_unknown(opts):
            found.append(Deferred(rule, res.ref, opts_key))
        else:
            values = [opts.get("max-size"), opts.get("max-file")]
            if any(v is None or v == "" for v in values):
                found.append(f"[{rule}] long-running {kind_of(res)} {res.ref} logs to json-file without "
                             f"rotation; set {opts_key} max-size and max-file")
            elif any(is_unknown(v) for v in values):
                found.append(Deferred(rule, res.ref, f"{opts_key} max-size / max-file"))
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


# Where each resource type names its image (a dotted path for `nested`).
IMAGE_KEYS = {CONTAINER: "image", SERVICE: "task_spec.container_spec.image", **IMAGE_SOURCES}
# The top-level input whose property dependencies say where an unknown image comes from: the
# engine records dependencies per top-level property, and a service's image is inside taskSpec.
IMAGE_DEPENDENCY = {CONTAINER: "image", SERVICE: "taskSpec"}


def check_image_pinned(res: Res, ctx: Ctx) -> Iterator[Outcome]:
    """Container `image`, Service `task_spec.container_spec.image`, RemoteImage `name`, Image
    `image_name`: pinned by tag (not latest), digest or image id. A container's (or service's)
    image that is not known yet (the id of a RemoteImage during a preview) is deferred here;
    `preview-unknowns` accepts it when it comes from a RemoteImage of the stack, whose `name`
    this rule checks."""
    key = IMAGE_KEYS.get(res.type)
    if key is None:
        return
    rule = "image-pinned-tag"
    kind = kind_of(res)
    ref = nested(res.props, key)
    if is_unknown(ref):
        why = ("computed from another resource, normally a RemoteImage's id"
               if res.type in IMAGE_DEPENDENCY else "computed from another resource")
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
    if not ctx.is_prod:
        return
    if res.type == SERVICE:
        yield from _check_data_service(res, ctx)
        return
    if res.protect:
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


SERVICE_MOUNTS = "task_spec.container_spec.mounts"
SERVICE_CONSTRAINTS = "task_spec.placement.constraints"
# A constraint that names one node, or the nodes carrying one label (`node.labels.K==V`).
_PINNING = re.compile(r"^\s*node\.(labels\.[^=!\s]+|hostname|id)\s*==\s*\S+\s*$")


def _check_data_service(res: Res, ctx: Ctx) -> Iterator[Outcome]:
    """On a swarm a data service's volume is created by the engine of the node its task runs
    on, never by Pulumi (so there is no Volume resource to protect, and deleting the service
    leaves the data). What protects the data is that the task always runs on the node that has
    it, on a named volume: a named `volume` mount (not tmpfs, not an anonymous volume, not
    none), a placement constraint that pins it (`node.labels.K==V`, `node.hostname==`,
    `node.id==`), and one task (two would share, or split, the volume)."""
    rule = "prod-stateful-protected"
    service = service_of(res)
    if is_unknown(service):
        yield Deferred(rule, res.ref, f"label {LABEL_SERVICE}",
                       "a data service must keep its data on a named volume on a pinned node")
        return
    if service not in DATA_SERVICES:
        return
    where = f"in {ctx.environment} (stack {ctx.stack or '?'})"
    mounts = nested(res.props, SERVICE_MOUNTS)
    named = False
    unsure: List[Outcome] = [Deferred(rule, res.ref, SERVICE_MOUNTS)] if is_unknown(mounts) else []
    for i, mount in enumerate([] if is_unknown(mounts) else mounts or []):
        kind = nested(mount, "type")
        source = nested(mount, "source")
        if is_unknown(kind) or (kind == "volume" and is_unknown(source)):
            unsure.append(Deferred(rule, res.ref, f"{SERVICE_MOUNTS}[{i}]"))
        elif kind == "volume" and isinstance(source, str) and source.strip():
            named = True
    if not named:  # one named volume is enough, whatever the other mounts are
        yield from unsure
        if not unsure:
            yield (f"[{rule}] data service {res.ref} mounts no named volume {where} ({SERVICE_MOUNTS} has "
                   "no mount of type volume with a source); its data would go with the task")
    constraints = nested(res.props, SERVICE_CONSTRAINTS)
    if is_unknown(constraints):
        yield Deferred(rule, res.ref, SERVICE_CONSTRAINTS)
    else:
        known = [c for c in constraints or [] if not is_unknown(c)]
        if not any(isinstance(c, str) and _PINNING.match(c) for c in known):
            if len(known) < len(constraints or []):
                yield Deferred(rule, res.ref, SERVICE_CONSTRAINTS + "[*]")
            else:
                yield (f"[{rule}] data service {res.ref} is not pinned to its data node {where} "
                       f"({SERVICE_CONSTRAINTS}: {list(known)}); add a constraint such as "
                       "node.labels.ai-meeting.data==true, or a task may start elsewhere on an empty volume")
    mode = nested(res.props, "mode", {})
    if is_unknown(mode):
        yield Deferred(rule, res.ref, "mode")
        return
    is_global = nested(mode, "global")
    replicas = nested(mode, "replicated.replicas", 1)
    if is_unknown(is_global) or is_unknown(replicas):
        yield Deferred(rule, res.ref, "mode")
    elif is_global is True:
        yield f"[{rule}] data service {res.ref} runs in global mode {where}; one task per data volume (replicas 1)"
    elif _positive(replicas) and float(replicas) > 1:
        yield (f"[{rule}] data service {res.ref} runs {shown(replicas)} tasks {where}; "
               "one task per data volume (replicas 1)")


# Images that read a secret from a file when given another variable, by the last segment of
# their repository (and the `ai-meeting.service` label): postgres and minio `<NAME>_FILE`,
# Grafana `<NAME>__FILE`. On a swarm that file is a docker.Secret under /run/secrets; a plain
# environment variable is in the service's spec, shown by `docker service inspect` to anyone
# who can reach a manager and by `docker inspect` of each task on its node.
FILE_SECRET_ENV = {
    "postgres": {"POSTGRES_PASSWORD": "POSTGRES_PASSWORD_FILE"},
    "minio": {"MINIO_ROOT_PASSWORD": "MINIO_ROOT_PASSWORD_FILE", "MINIO_SECRET_KEY": "MINIO_SECRET_KEY_FILE"},
    "grafana": {"GF_SECURITY_ADMIN_PASSWORD": "GF_SECURITY_ADMIN_PASSWORD__FILE"},
}
SERVICE_ENV = "task_spec.container_spec.env"


def image_repository(ref: str) -> str:
    """`ghcr.io/x/postgres:15@sha256:…` -> `postgres` (the last segment, no tag or digest)."""
    last = ref.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def check_service_secret_files(res: Res, ctx: Ctx) -> Iterator[Outcome]:
    """A swarm service whose image can read a password from a file (the `_FILE` variable) gets
    it as a docker.Secret, never as plain environment. Only the variables' names are read. The
    API's image reads only environment, so its settings stay environment (not judged)."""
    if res.type != SERVICE:
        return
    rule = "service-secrets-as-files"
    image, service = nested(res.props, IMAGE_KEYS[SERVICE]), service_of(res)
    kinds = {image_repository(image) if isinstance(image, str) else None,
             None if is_unknown(service) else service}
    reads = {k: v for kind in kinds if kind in FILE_SECRET_ENV for k, v in FILE_SECRET_ENV[kind].items()}
    if not reads:
        if is_unknown(image) and is_unknown(service):
            yield Deferred(rule, res.ref, f"{IMAGE_KEYS[SERVICE]} and label {LABEL_SERVICE}",
                           "an image that reads a password from a file must get it from a docker.Secret")
        return
    env = nested(res.props, SERVICE_ENV)
    if is_unknown(env):
        yield Deferred(rule, res.ref, SERVICE_ENV, f"none of {sorted(reads)} may be in it")
        return
    for name in list(env) if isinstance(env, Mapping) else []:
        if name in reads:
            yield (f"[{rule}] service {res.ref} passes {name} in plain environment ({SERVICE_ENV}), shown by "
                   f"`docker service inspect`; its image reads {reads[name]}: mount a docker.Secret there instead")


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


# Where nginx's ports are: (list, the port inside the container) per resource type.
NGINX_PORTS = {CONTAINER: ("ports", "internal"), SERVICE: ("endpoint_spec.ports", "target_port")}


def check_prod_tls(resources: Sequence[Res], ctx: Ctx) -> Iterator[Outcome]:
    """In prod TLS is on (nginx, a container or a swarm service, publishes 443) and not
    self-signed unless explicitly allowed."""
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
        if res.type not in NGINX_PORTS:
            continue
        service = service_of(res)
        if not is_unknown(service) and service != "nginx":
            continue
        key, inner = NGINX_PORTS[res.type]
        ports = nested(res.props, key)
        if is_unknown(ports):
            yield Deferred(rule, res.ref, key, "nginx must publish 443 in prod", STACK_CHECK_WHEN)
            continue
        internal = [p if is_unknown(p) or not isinstance(p, Mapping) else nested(p, inner)
                    for p in ports or []]
        if 443 in internal:
            continue
        if any(is_unknown(p) for p in internal) or is_unknown(service):
            yield Deferred(rule, res.ref, key if not is_unknown(service) else f"label {LABEL_SERVICE}",
                           "nginx must publish 443 in prod", STACK_CHECK_WHEN)
        else:
            yield f"[{rule}] nginx {kind_of(res)} {res.ref} does not publish 443: TLS is off in prod"


RESOURCE_RULES = {
    "ports-loopback-only": (check_ports_loopback_only,
                            "Only nginx publishes ports beyond 127.0.0.1; on a swarm only nginx's 80/443."),
    "container-healthcheck": (check_healthcheck,
                              "Every long-running container and swarm service has a healthcheck."),
    "container-restart-policy": (check_restart_policy,
                                 "Every long-running container and swarm service restarts on failure."),
    "container-resource-limits": (check_resource_limits,
                                  "Every long-running container and swarm service has CPU and memory limits."),
    "container-log-rotation": (check_log_rotation,
                               "Every long-running container and swarm service rotates its logs."),
    "image-pinned-tag": (check_image_pinned,
                         "No image uses the 'latest' tag or no tag (digests are fine)."),
    "password-min-length": (check_password_length,
                            "Generated passwords are at least 32 characters."),
    "service-secrets-as-files": (check_service_secret_files,
                                 "A swarm service reads a password its image can read from a file "
                                 "from a docker.Secret, not plain environment."),
    "prod-stateful-protected": (check_prod_protected,
                                "In prod, data volumes and secret resources are protected, and a swarm "
                                "data service is pinned to its node on a named volume."),
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
    "ports-loopback-only": frozenset({CONTAINER, SERVICE}),
    **{rule: frozenset({CONTAINER, SERVICE}) for rule in LONG_RUNNING_RULES},
    "image-pinned-tag": frozenset(IMAGE_KEYS),
    "password-min-length": frozenset({RANDOM_PASSWORD}),
    "service-secrets-as-files": frozenset({SERVICE}),
    "prod-stateful-protected": frozenset({VOLUME, SERVICE} | SECRET_TYPES),
}


def not_applicable(rule: str, res: Res, ctx: Ctx) -> Optional[str]:
    """Why resource rule `rule` does not judge `res` at all, or None when it does."""
    types = RULE_TYPES[rule]
    if res.type not in types:
        return "judges " + ", ".join(sorted(t.rsplit(":", 1)[-1] for t in types)) + " resources only"
    if rule == "prod-stateful-protected" and not ctx.is_prod:
        return f"stack {ctx.stack or '?'} is {ctx.environment}, not prod"
    if rule in LONG_RUNNING_RULES and is_job(res) is True:
        return f"a one-shot job, not a long-running {kind_of(res)}"
    return None


PREVIEW_UNKNOWNS = "preview-unknowns"
PREVIEW_UNKNOWNS_DESCRIPTION = ("Says which checks of the mandatory policies cannot be decided "
                                "during this preview (values computed from other resources).")


def image_source(res: Res, by_urn: Mapping[str, Res]) -> Optional[Res]:
    """The RemoteImage (or Image) of the stack that a container's `image` (a service's
    `taskSpec`) comes from, if any."""
    key = IMAGE_DEPENDENCY.get(res.type)
    for urn in res.deps.get(key, ()) if key else ():
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
                if (rule == "image-pinned-tag" and res.type in IMAGE_DEPENDENCY
                        and outcome.what == IMAGE_KEYS[res.type] and image_source(res, by_urn) is not None):
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
