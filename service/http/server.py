"""The aiohttp application serving /cnf, and its lifetime on a host and port."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

from aiohttp import web
from multidict import MultiDict

from service.http.cnf import COMMANDS, CnfContext
from service.http.errors import ApiError, error_response, unauthorized
from service.http.request import CnfRequest, basic_credentials
from service.metrics import Metrics

log = logging.getLogger(__name__)

CONTEXT_KEY = web.AppKey("cnf_context", CnfContext)
METRICS_KEY = web.AppKey("metrics", Metrics)


class HttpPortTaken(RuntimeError):
    pass


async def read_parameters(request: web.Request) -> tuple[MultiDict[str], bytes]:
    """The query parameters, plus a form body's; any other body is returned as it is."""
    params: MultiDict[str] = MultiDict(request.query)
    body = b""
    if request.method == "POST" and request.can_read_body:
        body = await request.read()
        # curl -d '{...}' without -H 'Content-Type: application/json' labels JSON as a form;
        # a body that starts like a JSON object is JSON whatever the label says.
        looks_like_json = body.lstrip().startswith(b"{")
        if request.content_type == "application/x-www-form-urlencoded" and not looks_like_json:
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, str):
                    params.add(key, value)
            body = b""
    return params, body


async def _is_admin(request: web.Request, ctx: CnfContext) -> bool:
    """True for valid admin credentials, False for none; wrong credentials are refused."""
    credentials = basic_credentials(request)
    if credentials is None:
        return False
    client = request.remote or "?"
    delay = ctx.throttle.delay_for(client)
    if delay:
        await asyncio.sleep(delay)
    if credentials.user == "admin" and await ctx.admin.check(credentials.password):
        ctx.throttle.succeeded(client)
        return True
    ctx.throttle.failed(client)
    log.warning("refused credentials for user %r from %s", credentials.user, client)
    raise unauthorized("wrong user name or password (use user 'admin' and the admin password)")


async def handle_cnf(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    cmd = request.query.get("cmd", "")
    try:
        params, body = await read_parameters(request)
        cmd = params.get("cmd", "")
        if not cmd:
            raise ApiError(400, "missing parameter 'cmd'")
        spec = COMMANDS.get(cmd)
        if spec is None:
            raise ApiError(400, f"unknown cmd {cmd!r}")
        if request.method not in spec.methods:
            raise ApiError(405, f"cmd {cmd!r} needs {' or '.join(sorted(spec.methods))}")
        is_admin = await _is_admin(request, ctx)
        if spec.needs_admin and not is_admin:
            raise unauthorized(f"cmd {cmd!r} needs the admin password (HTTP basic auth)")
        answer: Any = await spec.handler(ctx, CnfRequest(request, params, body, is_admin))
    except ApiError as exc:
        log.info("cnf %s refused: %d %s", cmd or "-", exc.status, exc.message)
        if exc.body is not None:
            return web.Response(
                status=exc.status,
                text=json.dumps(exc.body),
                content_type="application/json",
                headers=exc.headers,
            )
        return error_response(exc.status, exc.message, exc.headers, cmd or None)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(413, f"request body too large: {exc.text}", cmd=cmd or None)
    return web.Response(text=json.dumps(answer), content_type="application/json")


async def handle_login_check(request: web.Request) -> web.Response:
    """The product's web UI page; integrations (Home Assistant) GET it only to check the
    admin credentials: 200 when they are right, 401 otherwise."""
    ctx = request.app[CONTEXT_KEY]
    try:
        if not await _is_admin(request, ctx):
            raise unauthorized("admin credentials needed")
    except ApiError as exc:
        return error_response(exc.status, exc.message, exc.headers)
    return web.Response(text="<html><body>chargebus</body></html>", content_type="text/html")


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason)


async def _requested_cmd(request: web.Request, status: int) -> str:
    """The cmd as handle_cnf reads it: the query first, then a form body (cached by then)."""
    cmd = request.query.get("cmd", "")
    if (
        not cmd
        and status != 413  # the body was not read: reading it now would only waste time
        and request.method == "POST"
        and request.content_type == "application/x-www-form-urlencoded"
    ):
        with contextlib.suppress(web.HTTPException, ValueError):
            value = (await request.post()).get("cmd")
            cmd = value if isinstance(value, str) else ""
    return cmd


async def _count_cnf(request: web.Request, status: int) -> None:
    cmd = await _requested_cmd(request, status)
    # Clients choose cmd: only known names become label values, or any client could create
    # series without bound.
    label = cmd if cmd in COMMANDS else ("none" if not cmd else "unknown")
    request.app[METRICS_KEY].count_request(label, status)


@web.middleware
async def count_cnf_requests(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path != "/cnf":
        response: web.StreamResponse = await handler(request)
        return response
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        await _count_cnf(request, exc.status)
        raise
    except Exception:
        await _count_cnf(request, 500)
        raise
    await _count_cnf(request, response.status)
    return response


async def handle_metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": content_type})


def create_app(
    ctx: CnfContext, max_body_bytes: int, metrics: Metrics | None = None
) -> web.Application:
    # The counting middleware comes first, so it sees the status json_errors answers with.
    middlewares = [count_cnf_requests, json_errors] if metrics is not None else [json_errors]
    app = web.Application(client_max_size=max_body_bytes, middlewares=middlewares)
    app[CONTEXT_KEY] = ctx
    if metrics is not None:
        app[METRICS_KEY] = metrics
        app.router.add_route("GET", "/metrics", handle_metrics)
    app.router.add_route("GET", "/cnf", handle_cnf)
    app.router.add_route("POST", "/cnf", handle_cnf)
    app.router.add_route("GET", "/ui/{lang}/sim.htm", handle_login_check)
    return app


@contextlib.contextmanager
def http_listener(host: str, port: int) -> Iterator[list[socket.socket]]:
    """The HTTP port, bound and listening now on every address of `host` (a name such as
    localhost may have an IPv4 and an IPv6 one), closed when the block ends.

    Taken first, before the broker and the bridges start: a port in use then stops the
    process at once, with nothing to shut down. (A half-started embedded broker could hold
    up the exit.)"""
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
                        f"HTTP port {chosen} on {host} is taken; choose another with "
                        f"CHARGEBUS_HTTP_PORT or --http-port"
                    ) from exc
                raise
            sockets.append(stack.enter_context(sock))
        yield sockets


@contextlib.asynccontextmanager
async def serve_http(app: web.Application, listeners: list[socket.socket]) -> AsyncIterator[int]:
    """Serves `app` on the sockets from http_listener until the block ends; yields the port
    (useful with port 0)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        for sock in listeners:
            await web.SockSite(runner, sock).start()
        yield int(listeners[0].getsockname()[1])
    finally:
        await runner.cleanup()
