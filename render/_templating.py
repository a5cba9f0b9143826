"""Shared Jinja2 environment and input validators for the renderers."""
from __future__ import annotations

import re
import shlex
from functools import lru_cache
from pathlib import Path

import jinja2

TEMPLATE_DIR = Path(__file__).parent / "templates"


@lru_cache(maxsize=1)
def env() -> jinja2.Environment:
    # StrictUndefined: a misspelt variable is an error at render time, never an empty string
    # silently written into a config file. No autoescape: the outputs are configs and shell.
    e = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        # Bash writes ${#array[@]}: keep Jinja's comment syntax out of its way.
        comment_start_string="{##",
        comment_end_string="##}",
    )
    e.filters["shq"] = lambda v: shlex.quote(str(v))
    return e


def render(template: str, **values: object) -> str:
    return env().get_template(template).render(**values)


# ---- validators shared by several renderers -------------------------------------------------

_HOST_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME_RE = re.compile(rf"^(\*\.)?{_HOST_LABEL}(\.{_HOST_LABEL})*$")
# A safe absolute path: no whitespace, quotes, semicolons, braces, $ or backslashes, so it can
# be dropped into nginx config or shell without quoting surprises.
_PATH_RE = re.compile(r"^/[A-Za-z0-9._+@/-]*$")
_IDENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_hostname(value: str, what: str) -> str:
    if not isinstance(value, str) or len(value) > 253 or not _HOSTNAME_RE.match(value):
        raise ValueError(f"{what}: {value!r} is not a valid host name")
    return value


def check_path(value: str, what: str) -> str:
    if not isinstance(value, str) or not _PATH_RE.match(value) or "//" in value or "/../" in value + "/":
        raise ValueError(f"{what}: {value!r} must be an absolute path of [A-Za-z0-9._+@/-]")
    return value


def check_ident(value: str, what: str) -> str:
    """Container names, user names, database names used unquoted in scripts."""
    if not isinstance(value, str) or not _IDENT_RE.match(value) or len(value) > 128:
        raise ValueError(f"{what}: {value!r} must match [A-Za-z0-9][A-Za-z0-9_.-]*")
    return value


def check_port(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"{what}: {value!r} is not a TCP port (1-65535)")
    return value


def check_positive(value: int, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what}: {value!r} must be an integer >= {minimum}")
    return value


_CRON_FIELD_RE = re.compile(r"^[0-9A-Za-z*/,-]+$")


def check_cron_schedule(value: str, what: str) -> str:
    fields = value.split() if isinstance(value, str) else []
    if len(fields) != 5 or not all(_CRON_FIELD_RE.match(f) for f in fields):
        raise ValueError(f"{what}: {value!r} must be a 5-field cron schedule like '0 2 * * *'")
    return " ".join(fields)
