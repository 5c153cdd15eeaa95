"""API errors: every refusal is a 4xx with a JSON object naming the problem."""

from __future__ import annotations

import errno
import json

from aiohttp import web


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        body: object = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        # An answer the product gives as it is (cmd=modbus answers "bad modbus register
        # size" as a plain JSON string); None means the usual {"error": ...} object.
        self.body = body


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, {"WWW-Authenticate": 'Basic realm="chargebus"'})


def forbidden(message: str) -> ApiError:
    return ApiError(403, message)


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, cmd: str | None = None
) -> web.Response:
    body: dict[str, object] = {"error": message}
    if cmd:
        body["cmd"] = cmd
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
        headers=headers,
    )


def disk_fault(exc: OSError) -> ApiError:
    """A failed write to the data directory, as the answer that names its cause."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return ApiError(507, f"data directory is full; the change was not saved ({exc.strerror})")
    if exc.errno == errno.EROFS:
        return ApiError(503, "data directory is read-only; the change was not saved")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ApiError(
            503, "data directory is not writable (permission denied); the change was not saved"
        )
    return ApiError(
        500, f"data directory write failed ({exc.strerror or exc}); the change was not saved"
    )
