"""Plumbing every aiohttp server of chargebus shares: the /cnf adapter (service/http/), the
HTTP-input bridge's own /cnf and the OCPP bridge's listener.

Bound listening sockets, the server's lifetime, bounded body reading, form parameters, basic
credentials and JSON error answers. Nothing here knows a /cnf command or the service's
state, so bridges may use it without depending on the service's HTTP adapter.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import json
import socket
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDict

# A body must arrive within this time, or the request is answered 408 and the connection let go.
BODY_TIMEOUT_S = 10.0
# aiohttp buffers a body as it arrives, whether the handler reads it or not, up to twice
# this per connection before it stops reading the socket (its default is 64 KiB).
READ_BUFSIZE = 16 * 1024


class ApiError(Exception):
    """A refusal: the HTTP status, what was wrong, and headers to send with it."""

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


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str


def basic_credentials(request: web.Request) -> Credentials | None:
    """HTTP basic credentials; None without an Authorization header, empty ones for a header
    that is not readable basic auth (so that it counts as a wrong guess)."""
    header = request.headers.get("Authorization")
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return Credentials("", "")
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return Credentials("", "")
    return Credentials(user, password)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The body, at most `limit` bytes, within BODY_TIMEOUT_S; b"" for GET."""
    if request.method != "POST" or not request.can_read_body:
        return b""
    length = request.content_length
    if length is not None and length > limit:
        raise ApiError(413, f"request body too large: Maximum request body size {limit} exceeded.")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > limit:
                    raise ApiError(
                        413, f"request body too large: Maximum request body size {limit} exceeded."
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, f"request body not received within {BODY_TIMEOUT_S:g} s") from None
    except (aiohttp.ClientPayloadError, HttpProcessingError, ConnectionError) as exc:
        # Also a client that went away mid-body: nobody reads this answer, but it must not
        # count as the service's fault.
        raise ApiError(400, f"malformed or incomplete request body: {exc}") from None
    return b"".join(chunks)


def parameters(request: web.Request, body: bytes) -> tuple[MultiDict[str], bytes]:
    """The query parameters, plus a form body's; any other body is returned as it is."""
    params: MultiDict[str] = MultiDict(request.query)
    # curl -d '{...}' without -H 'Content-Type: application/json' labels JSON as a form;
    # a body that starts like a JSON object is JSON whatever the label says.
    looks_like_json = body.lstrip().startswith(b"{")
    if (
        body
        and request.content_type == "application/x-www-form-urlencoded"
        and not looks_like_json
    ):
        try:
            text = body.decode(request.charset or "utf-8")
        except (UnicodeDecodeError, LookupError):
            raise ApiError(400, "form body is not valid text in its charset (UTF-8)") from None
        for key, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
            params.add(key, value)
        body = b""
    return params, body


async def read_parameters(request: web.Request) -> tuple[MultiDict[str], bytes]:
    """Body (up to the app's client_max_size, within BODY_TIMEOUT_S) and parameters, for a
    request whose sender is already authenticated."""
    return parameters(request, await read_body(request, request.client_max_size))


class HttpPortTaken(RuntimeError):
    pass


@contextlib.contextmanager
def http_listener(
    host: str, port: int, *, setting: str = "CHARGEBUS_HTTP_PORT or --http-port"
) -> Iterator[list[socket.socket]]:
    """The port, bound and listening now on every address of `host` (a name such as
    localhost may have an IPv4 and an IPv6 one), closed when the block ends.

    Taken first, before the broker and the bridges start: a port in use then stops the
    process at once, with nothing to shut down. (A half-started embedded broker could hold
    up the exit.) `setting` names where the user chooses another port."""
    families = dict.fromkeys(
        info[0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    )
    with contextlib.ExitStack() as stack:
        sockets: list[socket.socket] = []
        for family in families:
            # Port 0: the first address picks one, and the others take the same.
            chosen = int(sockets[0].getsockname()[1]) if sockets else port
            try:
                sock = socket.create_server((host, chosen), family=family)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise HttpPortTaken(
                        f"HTTP port {chosen} on {host} is taken; choose another with {setting}"
                    ) from exc
                raise
            sockets.append(stack.enter_context(sock))
        yield sockets


@contextlib.asynccontextmanager
async def serve_http(
    app: web.Application,
    listeners: list[socket.socket],
    *,
    shutdown_timeout: float = 60.0,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[int]:
    """Serves `app` on the sockets from http_listener until the block ends; yields the port
    (useful with port 0)."""
    runner = web.AppRunner(
        app, access_log=None, read_bufsize=READ_BUFSIZE, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    try:
        for sock in listeners:
            await web.SockSite(runner, sock, ssl_context=ssl_context).start()
        yield int(listeners[0].getsockname()[1])
    finally:
        await runner.cleanup()
