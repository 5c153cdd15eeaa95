"""API errors: every refusal is a 4xx with a JSON object naming the problem."""

from __future__ import annotations

import errno

from service.httpkit import ApiError, error_response

__all__ = [
    "ApiError",
    "bad_request",
    "disk_fault",
    "error_response",
    "forbidden",
    "not_found",
    "unauthorized",
]


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, {"WWW-Authenticate": 'Basic realm="chargebus"'})


def forbidden(message: str) -> ApiError:
    return ApiError(403, message)


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
