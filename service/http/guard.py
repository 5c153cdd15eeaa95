"""The guess throttle at the HTTP edge: a credential check starts with `admit`, which answers
429 at once (before anything is checked) when the client's address is over its budget."""

from __future__ import annotations

import math

from aiohttp import web

from service.auth import FailureThrottle
from service.core.throttle import Refusal, Ticket
from service.http.errors import ApiError


def client_address(request: web.Request) -> str:
    return request.remote or "?"


def admit(throttle: FailureThrottle, request: web.Request) -> Ticket:
    verdict = throttle.admit(client_address(request))
    if isinstance(verdict, Refusal):
        seconds = max(1, math.ceil(verdict.retry_after))
        raise ApiError(
            429,
            f"too many failed attempts; try again in {seconds} s (nothing was checked)",
            {"Retry-After": str(seconds)},
        )
    return verdict
