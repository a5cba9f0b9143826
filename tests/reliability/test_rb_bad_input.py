"""Bad input through the real engine: hypothesis generates invalid stack configurations (every
key the config model declares, with out-of-range values, wrong types and bad literals; unknown
keys; bad domains, cron, images, secrets and conflicting options by this module's own rules).
Wrong-type and out-of-range cases are judged by the README's rules, written independently in
tests/reliability/documented_config.py, not by the model: a case the README calls valid is
dropped, and a case it calls invalid that the model accepts is reported (listed below as known,
with the reason, or failing the test). Each one is written as the stack's
config file and previewed (`pulumi preview --config-file`) against the deployed `rb` stack:
the preview must fail, name the key (`ai-meeting:<key>`), print no traceback, and leave the
stack's state byte for byte as it was.

Generation is deterministic (derandomize, no example database); previews run a few at a time
(each is a CLI, a language host and a Python program: mostly start-up).
"""

from __future__ import annotations

import copy
import resource
import json
import statistics
import string
import subprocess
import time
import types
import typing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import annotated_types
import pytest
import yaml
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, SecretStr

from config.loader import ConfigError, parse_pulumi_config, validate_config
from config.model import Images, StackConfig
from tests.reliability import documented_config, stack_rb

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.timeout(1800)]

WANTED = 200  # distinct invalid configurations, at least
PREVIEWED = 200  # previewed (each costs ~2.7 CPU-s: CLI, language host, Python program)
WORKERS = 4  # previews at once: each spends most of its time starting processes
NS = "ai-meeting"


# ---- the model's leaves ------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    path: str  # "api.replicas"
    kind: type  # int, float, bool, str, list, BaseModel
    bounds: tuple  # annotated_types constraints (Ge, Le, Gt, MinLen, ...)
    literals: tuple  # allowed values of a Literal


def _unwrap(annotation):
    """`Annotated[int|None, Field(ge=1)]` -> (int, constraints)."""
    bounds: list = []
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation, *meta = typing.get_args(annotation)
            for m in meta:
                bounds += list(getattr(m, "metadata", [])) if not isinstance(m, annotated_types.BaseMetadata) else [m]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation, tuple(bounds)  # a real union (the target): not a leaf
            annotation = args[0]
        else:
            return annotation, tuple(bounds)


def leaves(model: type[BaseModel] = StackConfig, prefix: str = "") -> list[Leaf]:
    out = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation, bounds = _unwrap(field.annotation)
        bounds = bounds + tuple(field.metadata)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += leaves(annotation, f"{path}.")
        elif typing.get_origin(annotation) is typing.Literal:
            out.append(Leaf(path, str, bounds, typing.get_args(annotation)))
        elif typing.get_origin(annotation) is list:
            out.append(Leaf(path, list, bounds, ()))
        elif annotation in (int, float, bool, str, SecretStr):
            out.append(Leaf(path, str if annotation is SecretStr else annotation, bounds, ()))
    return out


# The target has its own strategies; the e-mail receiver is one documented object (README:
# monitoring.alertmanager.email), its fields judged by render/monitoring.py's own tests.
LEAVES = [leaf for leaf in leaves() if not leaf.path.startswith(("target.", "monitoring.alertmanager.email."))]
NUMERIC = [leaf for leaf in LEAVES if leaf.kind in (int, float) and leaf.bounds]
LITERAL = [leaf for leaf in LEAVES if leaf.literals and leaf.path != "environment"]
TOP_KEYS = sorted(StackConfig.model_fields)
SECTIONS = {k: sorted(f.annotation.model_fields) for k, f in StackConfig.model_fields.items()
            if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)}
IMAGE_KEYS = [k for k, f in Images.model_fields.items() if f.annotation is str]


# ---- invalid values per category ----------------------------------------------------------------

# (category, key the message must name: a path under ai-meeting: or "@ns:key", {path: value})
Mutation = tuple[str, str, dict]

words = st.text(alphabet=string.ascii_letters + string.digits + "_-. ", min_size=1, max_size=12)


def _not_number(s: str) -> bool:
    try:
        float(s)
        return False
    except ValueError:
        return True


@st.composite
def out_of_range(draw) -> Mutation:
    leaf = draw(st.sampled_from(NUMERIC))
    values = []
    for b in leaf.bounds:
        if isinstance(b, annotated_types.Ge):
            values.append(st.integers(max_value=int(b.ge) - 1, min_value=int(b.ge) - 10**6))
        elif isinstance(b, annotated_types.Gt):
            values.append(st.integers(max_value=int(b.gt), min_value=int(b.gt) - 10**6))
        elif isinstance(b, annotated_types.Le):
            values.append(st.integers(min_value=int(b.le) + 1, max_value=int(b.le) + 10**9))
        elif isinstance(b, annotated_types.Lt):
            values.append(st.integers(min_value=int(b.lt), max_value=int(b.lt) + 10**9))
    assume(values)
    return "out of range", leaf.path, {leaf.path: draw(st.one_of(values))}


@st.composite
def wrong_type(draw) -> Mutation:
    """Values of another type, including the ones a lax parser might coerce (true for a number,
    "yes" or 1 for a boolean): documented_config judges each, not the model."""
    leaf = draw(st.sampled_from(LEAVES))
    if leaf.kind in (int, float):
        value = draw(st.one_of(words.filter(_not_number), st.lists(st.integers(), max_size=2), st.just({"a": 1}),
                               st.booleans()))
        if leaf.kind is int:
            value = draw(st.one_of(st.just(value), st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != int(f))))
    elif leaf.kind is bool:
        value = draw(st.one_of(words, st.integers(min_value=-5, max_value=10**6), st.lists(st.booleans(), min_size=1, max_size=2),
                               st.sampled_from(["yes", "no", "on", "off", "1", "0", "y", "n", "t", "f", "True", "FALSE"])))
    elif leaf.kind is list:
        value = draw(st.one_of(st.integers(), st.just({"x": "y"}), st.booleans()))
    else:  # str
        value = draw(st.one_of(st.integers(), st.lists(words, min_size=1, max_size=2), st.just({"k": "v"}), st.booleans()))
    return "wrong type", leaf.path, {leaf.path: value}


@st.composite
def bad_literal(draw) -> Mutation:
    leaf = draw(st.sampled_from(LITERAL))
    value = draw(words.filter(lambda s: s not in leaf.literals))
    return "wrong type", leaf.path, {leaf.path: value}


@st.composite
def unknown_key(draw) -> Mutation:
    typo = draw(st.sampled_from(["suffix", "case", "drop"]))

    def misspell(key: str) -> str:
        if typo == "suffix":
            return key + draw(st.sampled_from(["s", "_x", "2", "-old"]))
        if typo == "case":
            return key.replace("_", "-") if "_" in key else key.capitalize()
        return key[:-1] if len(key) > 2 else key + "z"

    where = draw(st.sampled_from(["top", "section", "namespace"]))
    if where == "top":
        key = misspell(draw(st.sampled_from(TOP_KEYS)))
        assume(key not in TOP_KEYS)
        return "unknown key", key, {key: draw(st.one_of(st.integers(0, 9), words))}
    if where == "section":
        section = draw(st.sampled_from(sorted(SECTIONS)))
        key = misspell(draw(st.sampled_from(SECTIONS[section])))
        assume(key not in SECTIONS[section])
        return "unknown key", f"{section}.{key}", {f"{section}.{key}": draw(st.one_of(st.integers(0, 9), words))}
    # another namespace: provider settings come from ai-meeting:target only
    key = draw(st.sampled_from(["docker:host", "docker:caCertMaterial", "command:timeout", "random:seed", "tls:proxy"]))
    return "unknown key", "@" + key, {"@" + key: draw(st.sampled_from(["tcp://127.0.0.1:2375", "1", "x"]))}


label = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=10)


@st.composite
def bad_domain(draw) -> Mutation:
    good = draw(st.lists(label, min_size=1, max_size=3).map(".".join))
    bad = draw(st.sampled_from([
        good.upper() if any(c.isalpha() for c in good) else f"{good}_x",
        f"-{good}", f"{good}-", f"{good}..com", f"{good}_x.com", f"{good} .com", "", "a" * 64 + ".com",
        f"{good}.com/", f"https://{good}.com", f"*.{good}.com", f"{good}:443", ".".join(["a" * 63] * 4 + ["com"]),
    ]))
    domains = draw(st.sampled_from([[bad], ["localhost", bad], [bad, "localhost"], [good, good]]))
    # the message names the list, or the element: both start with ai-meeting:domains
    return "bad domain", "domains", {"domains": domains}


@st.composite
def bad_cron(draw) -> Mutation:
    field = st.one_of(st.just("*"), st.integers(0, 59).map(str), st.just("*/5"), st.just("1-5"))
    fields = draw(st.lists(field, min_size=5, max_size=5))
    how = draw(st.sampled_from(["short", "long", "letters", "symbol", "empty", "macro", "sep", "range", "reversed"]))
    ranges = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))  # cron(5)
    fields = [f if not f.isdigit() else str(int(f) % (ranges[i][1] + 1 - ranges[i][0]) + ranges[i][0]) for i, f in enumerate(fields)]
    if how == "short":
        fields = fields[: draw(st.integers(1, 4))]
    elif how == "long":
        fields = fields + draw(st.lists(field, min_size=1, max_size=2))
    elif how == "letters":
        fields[draw(st.integers(0, 4))] = draw(st.sampled_from(["MON", "jan", "x", "?", "L", "every"]))
    elif how == "symbol":
        fields[draw(st.integers(0, 4))] += draw(st.sampled_from(["#", "%", "$", "!", "/", "-", ","]))
    elif how == "empty":
        fields = []
    elif how == "range":  # well-formed, but cron refuses a value outside the field's range
        i = draw(st.integers(0, 4))
        low, high = ranges[i]
        fields[i] = str(draw(st.one_of(st.integers(high + 1, 999), st.integers(0, low - 1) if low else st.nothing())))
    elif how == "reversed":
        i = draw(st.integers(0, 4))
        low, high = ranges[i]
        a = draw(st.integers(low + 1, high))
        fields[i] = f"{a}-{draw(st.integers(low, a - 1))}"
    elif how == "macro":
        fields = [draw(st.sampled_from(["@daily", "@reboot", "@hourly", "daily"]))]
    schedule = ("\t" if how == "sep" else " ").join(fields)
    return "bad cron", "backup.schedule", {"backup.schedule": schedule}


@st.composite
def bad_image(draw) -> Mutation:
    key = draw(st.sampled_from(IMAGE_KEYS))
    name = draw(st.lists(label, min_size=1, max_size=3).map("/".join))
    ref = draw(st.sampled_from([
        f"{name}:latest", name, f"{name.upper()}X:1.0", f"{name}:", f"{name}:1.0:2.0", f"{name} :1.0",
        f"{name}@sha256:{'a' * 63}", f"{name}@md5:{'a' * 32}", f"{name}:-bad", f"{name}:{'1' * 129}",
        f"https://{name}:1.0", f"{name}:tag with space", "", ":1.0",
    ]))
    return "bad image ref", f"images.{key}", {f"images.{key}": ref}


PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"


@st.composite
def missing_secret(draw) -> Mutation:
    case = draw(st.sampled_from(["ssh key", "ssh key not pem", "provided cert", "provided key", "provided both", "letsencrypt email"]))
    host = draw(st.sampled_from(["203.0.113.10", "server.example.com", "meet.example.org"]))
    if case == "ssh key":
        return "missing secret", "target.private_key", {"target": {"kind": "ssh", "host": host}}
    if case == "ssh key not pem":
        return "missing secret", "target.private_key", {"target": {"kind": "ssh", "host": host, "private_key": draw(words)}}
    if case == "letsencrypt email":
        return "missing secret", "tls.email", {"tls": {"mode": "letsencrypt"},
                                               "target": {"kind": "ssh", "host": host, "private_key": PEM},
                                               "domains": ["meet.example.com"]}
    tls = {"mode": "provided"}
    if case == "provided cert":
        tls["private_key"] = "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n"
        return "missing secret", "tls.certificate", {"tls": tls}
    if case == "provided key":
        tls["certificate"] = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"
        return "missing secret", "tls.private_key", {"tls": tls}
    return "missing secret", "tls.certificate", {"tls": tls}


@st.composite
def conflicting(draw) -> Mutation:
    case = draw(st.sampled_from(["upload local", "letsencrypt local", "prod self-signed", "same ports",
                                 "port clash", "root user", "letsencrypt localhost"]))
    host = draw(st.sampled_from(["203.0.113.10", "server.example.com"]))
    ssh = {"kind": "ssh", "host": host, "private_key": PEM}
    if case == "upload local":
        return "conflict", "images.upload", {"images.upload": True}
    if case == "letsencrypt local":
        return "conflict", "tls.mode", {"tls": {"mode": "letsencrypt", "email": "ops@example.com"}, "domains": ["meet.example.com"]}
    if case == "letsencrypt localhost":
        return "conflict", "domains", {"tls": {"mode": "letsencrypt", "email": "ops@example.com"}, "target": ssh}
    if case == "prod self-signed":
        return "conflict", "tls.mode", {"environment": "prod"}
    if case == "root user":
        return "conflict", "target.user", {"target": {**ssh, "user": "root"}}
    port = draw(st.integers(1024, 65535))
    if case == "same ports":
        return "conflict", "nginx.https_port", {"nginx.http_port": port, "nginx.https_port": port}
    service = draw(st.sampled_from(sorted(stack_rb.LOOPBACK)))
    return "conflict", "loopback_ports", {f"loopback_ports.{service}": port, "nginx.https_port": port}


CATEGORIES = [out_of_range(), wrong_type(), bad_literal(), unknown_key(), bad_domain(), bad_cron(), bad_image(),
              missing_secret(), conflicting()]


# ---- applying a mutation to the deployed stack's config -----------------------------------------


def apply(base: dict, changes: dict) -> dict:
    """The stack file's `config:` with the changes: `a.b` paths go into the `ai-meeting:a`
    object, `@ns:key` is a key of another namespace."""
    cfg = copy.deepcopy(base)
    for path, value in changes.items():
        if path.startswith("@"):
            cfg[path[1:]] = value
            continue
        top, *rest = path.split(".")
        if not rest:
            cfg[f"{NS}:{top}"] = value
            continue
        node = cfg.setdefault(f"{NS}:{top}", {})
        for part in rest[:-1]:
            node = node.setdefault(part, {})
        node[rest[-1]] = value
    return cfg


def as_engine_passes_it(cfg: dict) -> dict[str, str]:
    """Config values reach the program as strings (objects and lists as JSON), as the engine passes them."""
    out = {}
    for key, value in cfg.items():
        key = key if ":" in key else f"{NS}:{key}"
        if isinstance(value, (dict, list)):
            out[key] = json.dumps(value)
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        else:
            out[key] = str(value)
    return out


def is_invalid(cfg: dict, key: str | None = None) -> bool:
    """The program refuses cfg (naming `key`, when given). A value the model accepts can still
    make it refuse another key (`backup.offsite.enabled: 1` is read as true, and then the
    endpoint is missing): that value was accepted, so it is not a case about `key`."""
    try:
        raw = parse_pulumi_config(as_engine_passes_it(cfg), stack_rb.STACK)
        raw.setdefault("environment", "dev")
        validate_config(raw, stack_rb.STACK)
    except ConfigError as error:
        return key is None or f"{NS}:{key}" in str(error)
    return False


# Values the README's rules call invalid that the model accepts, known and why. Anything else
# the model accepts against the README fails the test.
KNOWN_ACCEPTED = {
    "true/false for a number": "pydantic's lax mode reads true/false as 1/0 for int and float fields "
                               "(config/model.py declares plain int/float, not strict ones); README: an integer",
    "yes/no/on/off/1/0 for a boolean": "pydantic's lax mode parses these as booleans; README documents true/false",
}


def known_reason(path: str, value) -> str | None:
    rule = documented_config.RULES.get(path, ("?",))
    if rule[0] in ("int", "number", "port or null") and isinstance(value, bool):
        return "true/false for a number"
    if rule[0] == "bool":
        v = documented_config.engine_form(value) if "." not in path else value
        if (isinstance(v, int) and not isinstance(v, bool) and v in (0, 1)) or (
                isinstance(v, str) and v.lower() in ("yes", "no", "on", "off", "1", "0", "y", "n", "t", "f")):
            return "yes/no/on/off/1/0 for a boolean"
    return None


SWEEP_VALUES = [True, False, "yes", "on", "1", 0, 1, 2.5, "abc", [1], {"a": 1}, 7, "5", 5.0, -1, 10**7]


def sweep(base: dict) -> list[tuple[str, object, str, str | None]]:
    """Every key the model declares with each of SWEEP_VALUES (no engine: the program's own
    validation in-process): (key, value, the README's verdict, known reason) for each value the
    README calls invalid that the model accepts. Hypothesis samples; this covers every key."""
    out = []
    for leaf in LEAVES:
        for value in SWEEP_VALUES:
            verdict = documented_config.judge(leaf.path, value)
            if verdict.startswith("invalid") and not is_invalid(apply(base, {leaf.path: value}), leaf.path):
                out.append((leaf.path, value, verdict, known_reason(leaf.path, value)))
    return out


@dataclass
class Generated:
    cases: list  # (category, key, config) the README calls invalid (or built by this module's own rules)
    accepted: list  # (category, key, value, the README's verdict, known reason or None): the model accepts them
    documented_valid: dict  # category -> cases dropped because the README allows the value


def generate(base: dict) -> Generated:
    """Distinct invalid configs (category, key, config), deterministic, every category; wrong-type
    and out-of-range values judged by the README's rules (documented_config)."""
    found: dict[str, tuple[str, str, dict]] = {}
    accepted: dict[str, tuple] = {}
    documented_valid: dict[str, int] = {}

    @settings(max_examples=WANTED * 3, derandomize=True, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(CATEGORIES))
    def collect(mutation):
        category, key, changes = mutation
        cfg = apply(base, changes)
        ident = json.dumps(cfg, sort_keys=True, default=str)
        if category in ("wrong type", "out of range"):
            verdict = documented_config.judge(key, changes[key])
            assert verdict != "undocumented", f"no README rule for {key} (documented_config.RULES)"
            if verdict == "valid":  # e.g. "5" for a number, or a bound only the model declares
                documented_valid[category] = documented_valid.get(category, 0) + 1
                assume(False)
            if not is_invalid(cfg, key):  # the README says invalid, the model accepts it
                accepted.setdefault(ident, (category, key, changes[key], verdict, known_reason(key, changes[key])))
                return
        found.setdefault(ident, (category, key, cfg))

    collect()
    return Generated(list(found.values()), list(accepted.values()), documented_valid)


def round_robin(cases: list, n: int) -> list:
    """n cases taken in turn from each category, so every category is well represented."""
    queues: dict[str, list] = {}
    for case in cases:
        queues.setdefault(case[0], []).append(case)
    out: list = []
    while len(out) < n and any(queues.values()):
        for queue in queues.values():
            if queue and len(out) < n:
                out.append(queue.pop(0))
    return out


# ---- the test ------------------------------------------------------------------------------------


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def preview(project, config_file: Path) -> tuple[int, str, float]:
    started = time.monotonic()
    proc = subprocess.run(["pulumi", "preview", "--non-interactive", "--stack", stack_rb.STACK, "--config-file", str(config_file)],
                          cwd=project.dir, env=project.env, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


@pytest.mark.figures(("bad input: stack state after the invalid previews (backend files + `pulumi stack export`)", "byte-identical"))
def test_invalid_configs_fail_the_preview_naming_the_key_and_change_no_state(rb_stack, tmp_path, record):
    project = rb_stack
    stack_file = yaml.safe_load((project.dir / f"Pulumi.{stack_rb.STACK}.yaml").read_text())
    base = stack_file["config"]
    generated = generate(base)
    cases = generated.cases
    swept = sweep(base)
    accepted = [(a[1], a[2], a[4]) for a in generated.accepted] + [(key, value, reason) for key, value, _, reason in swept]
    unexplained = [a for a in accepted if a[2] is None]
    known: dict[str, set] = {}
    for key, _, reason in accepted:
        if reason:
            known.setdefault(reason, set()).add(key)
    record("bad input: values the README's rules call invalid that the model accepts (generated wrong-type and "
           f"out-of-range cases, and every key x {len(SWEEP_VALUES)} values; judged by tests/reliability/documented_config.py)",
           f"{len(generated.accepted)} of the generated, {len(swept)} of the sweep: "
           + ("; ".join(f"known, {len(keys)} keys: {k} ({KNOWN_ACCEPTED[k]})" for k, keys in sorted(known.items())) or "none")
           + (f"; {len(unexplained)} unexplained: {unexplained[:5]}" if unexplained else ""),
           "none unexplained", not unexplained)
    assert not unexplained, "the model accepts values the README calls invalid:\n" + "\n".join(map(str, unexplained))
    by_category = {category: 0 for category, _, _ in cases}
    assert len(cases) >= WANTED, f"only {len(cases)} distinct invalid configs generated: {by_category}"
    cases = round_robin(cases, PREVIEWED)
    by_category = {c: sum(1 for case in cases if case[0] == c) for c in by_category}
    assert all(n >= 10 for n in by_category.values()) and len(by_category) == 8, by_category

    files = []
    for i, (_, _, cfg) in enumerate(cases):
        path = tmp_path / f"Pulumi.{stack_rb.STACK}.bad-{i:03d}.yaml"
        path.write_text(yaml.safe_dump({**stack_file, "config": cfg}, sort_keys=False))
        files.append(path)

    before = stack_rb.state_fingerprint(project)
    started, cpu = time.monotonic(), _children_cpu()
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda f: preview(project, f), files))
    elapsed, cpu = time.monotonic() - started, _children_cpu() - cpu
    after = stack_rb.state_fingerprint(project)

    problems = []
    for (category, key, cfg), path, (code, output, _) in zip(cases, files, results):
        named = key[1:] if key.startswith("@") else f"{NS}:{key}"
        why = []
        if code == 0:
            why.append("preview passed")
        if named not in output:
            why.append(f"{named} not named")
        if "Traceback" in output:
            why.append("traceback")
        if why:
            problems.append(f"[{category}] {path.name}: {', '.join(why)}\n{output[-1500:]}")
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))

    passed = len(cases) - len(problems)
    durations = [d for _, _, d in results]
    summary = ", ".join(f"{k} {v}" for k, v in sorted(by_category.items()))
    record(f"bad input: {len(cases)} distinct invalid configs (hypothesis) through `pulumi preview` ({summary})",
           f"{passed} of {len(cases)} failed naming the key, no traceback", f"all, >= {WANTED}",
           not problems and len(cases) >= WANTED)
    record("bad input: stack state after the invalid previews (backend files + `pulumi stack export`)",
           "byte-identical" if not changed else f"changed: {changed}", "byte-identical", not changed)
    # Wall time depends on what else the machine runs; CPU time per preview does not (much).
    record.figure("bad input: preview time (speed belongs in benchmarks)",
                  f"{len(cases)} in {elapsed:.0f} s wall, {WORKERS} at once (one: median "
                  f"{statistics.median(durations):.1f} s); {cpu / len(cases):.2f} CPU-s each, {cpu:.0f} CPU-s in all")
    assert not problems, f"{len(problems)} of {len(cases)}:\n" + "\n\n".join(problems[:10])
    assert not changed, changed
