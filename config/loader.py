"""Read the stack's Pulumi config into a validated StackConfig, or fail with one clear error."""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

from pydantic import ValidationError

from .model import StackConfig

PROJECT = "ai-meeting"


class ConfigError(Exception):
    """Every problem in the stack config, one per line, each naming its key."""

    def __init__(self, stack: str, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"Stack '{stack}' has {len(problems)} invalid configuration value(s); nothing was changed.\n"
            f"{lines}\nFix them with `pulumi config set --path {PROJECT}:<key> <value>` (see README: Configuration)."
        )


def _key_of(loc: tuple[Any, ...]) -> str:
    """`('api', 'replicas')` -> `ai-meeting:api.replicas`; list indexes as [n]."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1] = f"{parts[-1]}[{item}]" if parts else f"[{item}]"
        elif item in ("local", "ssh", "swarm") and parts and parts[-1] == "target":
            continue  # discriminated-union branch name, not a key the operator wrote
        else:
            parts.append(str(item))
    return f"{PROJECT}:{'.'.join(parts)}" if parts else PROJECT


def _describe(err: dict[str, Any]) -> str:
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see README: Configuration)"
    elif err["type"] == "missing":
        msg = "required"
    elif err["type"] == "union_tag_invalid":
        msg = "must be 'local' or 'ssh'"
    elif err["type"] == "literal_error":
        msg = msg.replace("Input should be", "must be")
    else:
        msg = msg.replace("Input should be", "must be")
    # Secrets never appear in messages: pydantic puts the input in err["input"], we don't print it.
    return msg


def _model_level_key(msg: str, key: str) -> tuple[str, str]:
    """Cross-field validators name the key they are about first: 'tls.email: ...'."""
    head, sep, rest = msg.partition(": ")
    if sep and re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", head):
        return f"{PROJECT}:{head}", rest
    return key, msg


def validate_config(raw: Mapping[str, Any], stack: str) -> StackConfig:
    """Validate a plain dict of config (keys without the project prefix). Pure: no Pulumi."""
    try:
        return StackConfig.model_validate(dict(raw))
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            key = _key_of(tuple(err["loc"]))
            msg = _describe(err)
            if err["type"] == "value_error":
                key, msg = _model_level_key(msg, key)
            problems.append(f"{key}: {msg}")
        raise ConfigError(stack, problems) from None


def parse_pulumi_config(values: Mapping[str, str], stack: str) -> dict[str, Any]:
    """Turn the engine's `project:key -> string` map into a dict of values.

    Structured values arrive as JSON strings. Keys of other namespaces (provider config
    such as `docker:host`) are refused: providers are configured from our model only.
    """
    raw: dict[str, Any] = {}
    problems = []
    for full_key, value in values.items():
        namespace, _, key = full_key.partition(":")
        if namespace != PROJECT:
            problems.append(
                f"{full_key}: provider settings are derived from {PROJECT}:target; remove this key"
            )
            continue
        try:
            raw[key] = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            raw[key] = value  # a plain string value such as a domain or a PEM key
    if problems:
        raise ConfigError(stack, problems)
    return raw


def load_stack_config() -> StackConfig:
    """Read and validate the current stack's config from the Pulumi runtime."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    stack = pulumi.get_stack()
    values = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    raw = parse_pulumi_config(values, stack)
    raw.setdefault("environment", _environment_of(stack))
    return validate_config(raw, stack)


def _environment_of(stack: str) -> str:
    """`prod`, `prod-eu` -> prod; `staging*` -> staging; anything else -> dev."""
    for env in ("prod", "staging"):
        if stack == env or stack.startswith(f"{env}-"):
            return env
    return "dev"
