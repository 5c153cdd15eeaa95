"""Reading /cnf requests: parameters from the query (and form bodies) and JSON bodies (who
is asking: service/httpkit.py reads the basic credentials)."""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from service.http.errors import bad_request


class CnfRequest:
    def __init__(
        self,
        request: web.Request,
        params: MultiDictProxy[str] | MultiDict[str],
        body: bytes,
        is_admin: bool,
    ) -> None:
        self.http = request
        self.params = params
        self.body = body
        self.is_admin = is_admin

    @property
    def method(self) -> str:
        return self.http.method

    def text(self, name: str, *, required: bool = True, max_length: int = 200) -> str | None:
        values = self.params.getall(name, [])
        if not values:
            if required:
                raise bad_request(f"missing parameter {name!r}")
            return None
        if len(values) > 1:
            raise bad_request(f"parameter {name!r} given more than once")
        value = values[0]
        if len(value) > max_length:
            raise bad_request(f"parameter {name!r} is longer than {max_length} characters")
        return value

    def required_text(self, name: str, max_length: int = 200) -> str:
        value = self.text(name, max_length=max_length)
        assert value is not None
        return value

    def integer(
        self,
        name: str,
        *,
        required: bool = True,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        raw = self.text(name, required=required)
        if raw is None:
            return None
        try:
            value = int(raw.strip())
        except ValueError:
            raise bad_request(f"parameter {name!r} must be an integer, got {raw!r}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise bad_request(
                f"parameter {name!r} must be between {minimum} and {maximum}, got {value}"
            )
        return value

    def number(
        self,
        name: str,
        *,
        required: bool = True,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float | None:
        raw = self.text(name, required=required)
        if raw is None:
            return None
        try:
            value = float(raw.strip())
        except ValueError:
            raise bad_request(f"parameter {name!r} must be a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise bad_request(f"parameter {name!r} must be a finite number")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise bad_request(
                f"parameter {name!r} must be between {minimum} and {maximum}, got {raw}"
            )
        return value

    def flag(self, name: str, *, required: bool = True) -> bool | None:
        value = self.integer(name, required=required, minimum=0, maximum=1)
        return None if value is None else value == 1

    def json_body(self) -> Any:
        if not self.body.strip():
            raise bad_request("this command needs a JSON body")
        try:
            value = json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_request(f"body is not valid JSON: {exc}") from None
        except RecursionError:
            raise bad_request(f"body is nested deeper than {MAX_JSON_DEPTH} levels") from None
        if json_depth(value) > MAX_JSON_DEPTH:
            raise bad_request(f"body is nested deeper than {MAX_JSON_DEPTH} levels")
        return value


# No /cnf body needs more than about five levels (set_params: devices, a device, its charging
# rules, a rule); deeper input would only reach recursive code later (validation, copies).
MAX_JSON_DEPTH = 32


def json_depth(value: Any) -> int:
    """How deeply arrays and objects nest in a decoded JSON value (a scalar is 0); without
    recursion, so any input that json.loads accepted can be measured."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest
