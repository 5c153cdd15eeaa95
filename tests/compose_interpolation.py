"""Variable interpolation as docker compose does it, so that docker-compose.yml can be checked
against .env.example where no Docker is installed.

Compose substitutes `${...}` in every string value of every service before it looks at
profiles, so a `${VAR:?message}` in a service of an unused profile still aborts a plain
`docker compose up`. The rules (compose specification, "Interpolation"):

- `$$` is a literal `$`; `$VAR` and `${VAR}` are the value ("" when unset);
- `${VAR:-default}` / `${VAR-default}`: default when unset or empty / when unset;
- `${VAR:?message}` / `${VAR?message}`: an error when unset or empty / when unset;
- `${VAR:+other}` / `${VAR+other}`: other when set and not empty / when set, else "";
- defaults, messages and replacements are interpolated themselves (`${A:-${B}}`).

And the `.env` file as compose reads it: `KEY=VALUE` lines, `#` comments, an optional
`export `, values in single quotes (literal) or double quotes, ` #` starting an inline comment
after an unquoted value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


class InterpolationError(ValueError):
    """What compose would stop with: a `?` variable unset (or empty), or bad syntax."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    value, end = _interpolate(text, 0, env, closing=False)
    assert end == len(text)
    return value


def _interpolate(text: str, pos: int, env: Mapping[str, str], *, closing: bool) -> tuple[str, int]:
    """Substitutes from `pos` to the end of `text`, or up to the `}` that closes the
    enclosing `${` when `closing`; returns the result and the position after it."""
    out: list[str] = []
    while pos < len(text):
        char = text[pos]
        if closing and char == "}":
            return "".join(out), pos + 1
        if char != "$":
            out.append(char)
            pos += 1
            continue
        following = text[pos + 1 : pos + 2]
        if following == "$":
            out.append("$")
            pos += 2
        elif following == "{":
            value, pos = _braced(text, pos + 2, env)
            out.append(value)
        elif name := _NAME.match(text, pos + 1):
            out.append(env.get(name.group(), ""))
            pos = name.end()
        else:
            out.append("$")
            pos += 1
    if closing:
        raise InterpolationError(f"unclosed '${{' in {text!r}")
    return "".join(out), pos


def _braced(text: str, pos: int, env: Mapping[str, str]) -> tuple[str, int]:
    """`${NAME...}` from just after the `${`."""
    name = _NAME.match(text, pos)
    if name is None:
        raise InterpolationError(f"invalid variable name in {text!r} at {pos}")
    var, pos = name.group(), name.end()
    if text.startswith("}", pos):
        return env.get(var, ""), pos + 1
    operator = next((op for op in _OPERATORS if text.startswith(op, pos)), None)
    if operator is None:
        raise InterpolationError(f"invalid interpolation format for {var!r} in {text!r}")
    argument, pos = _interpolate(text, pos + len(operator), env, closing=True)
    is_set = var in env
    usable = is_set and (env[var] != "" or not operator.startswith(":"))
    if operator.endswith("-"):
        return (env[var] if usable else argument), pos
    if operator.endswith("+"):
        return (argument if usable else ""), pos
    if not usable:  # "?" and ":?"
        raise InterpolationError(f"required variable {var} is missing a value: {argument}")
    return env[var], pos


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    """Every string value in a loaded YAML document (keys stay as they are, as in compose)."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


def read_env_file(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _NAME.fullmatch(key):
            raise InterpolationError(f"line {number} is not KEY=VALUE: {raw!r}")
        values[key] = _env_value(value.strip())
    return values


def _env_value(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        inner = value[1:-1]
        return inner if value[0] == "'" else inner.replace('\\"', '"').replace("\\n", "\n")
    comment = re.search(r"\s#", value)
    return value[: comment.start()].rstrip() if comment else value
