"""The aiohttp application serving /cnf and /metrics (the listener and the server's lifetime
are service/httpkit.py's, shared with the bridges' servers)."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from service.http.browser_guard import browser_guard
from service.http.cnf import COMMANDS, CnfContext, Command
from service.http.dashboard import add_dashboard
from service.http.errors import disk_fault, unauthorized
from service.http.events import DashboardHub
from service.http.guard import admit, client_address
from service.http.request import CnfRequest
from service.httpkit import ApiError, basic_credentials, error_response, parameters, read_body
from service.metrics import Metrics
from service.store import StoreWriteError

log = logging.getLogger(__name__)

CONTEXT_KEY = web.AppKey("cnf_context", CnfContext)
MAX_BODY_KEY = web.AppKey("max_body_bytes", int)
# The cmd as read from the query or a form body, for the error answer and the metrics.
CMD_KEY = web.RequestKey("chargebus_cmd", str)
METRICS_KEY = web.AppKey("metrics", Metrics)


# An unauthenticated request may send this much body: the open commands that take one
# (set_user, change_admin_pwd as a form, a form-encoded get_dev_info) need a few hundred
# bytes. The admin may send settings.max_body_bytes. Either must arrive within
# BODY_TIMEOUT_S, or the request is answered 408 and the connection let go.
OPEN_BODY_BYTES = 16 * 1024


async def _is_admin(request: web.Request, ctx: CnfContext) -> bool:
    """True for valid admin credentials, False for none; wrong credentials are refused.
    Read from the header alone, before any body is read."""
    credentials = basic_credentials(request)
    if credentials is None:
        return False
    ticket = admit(ctx.throttle, request)
    if credentials.user == "admin" and await ctx.admin.check(credentials.password):
        ctx.throttle.succeeded(ticket)
        return True
    ctx.throttle.failed(ticket)
    log.warning(
        "refused credentials for user %r from %s", credentials.user, client_address(request)
    )
    raise unauthorized("wrong user name or password (use user 'admin' and the admin password)")


def _command(cmd: str, method: str) -> Command:
    if not cmd:
        raise ApiError(400, "missing parameter 'cmd'")
    spec = COMMANDS.get(cmd)
    if spec is None:
        raise ApiError(400, f"unknown cmd {cmd!r}")
    if method not in spec.methods:
        raise ApiError(405, f"cmd {cmd!r} needs {' or '.join(sorted(spec.methods))}")
    return spec


def _single_cmd(params: MultiMapping[str]) -> str:
    """The one `cmd`; given twice (in the query, or in the query and a form body) it is
    refused like any repeated parameter, never guessed."""
    values = params.getall("cmd", [])
    if len(values) > 1:
        raise ApiError(400, "parameter 'cmd' given more than once")
    return str(values[0]) if values else ""


async def _answer(request: web.Request, ctx: CnfContext) -> Any:
    cmd = _single_cmd(request.query)
    # The order of checks (docs/api.md): cmd and method from the query, then credentials,
    # then admin, all before a byte of body is read; only a cmd given in a form body waits
    # for the body.
    spec = _command(cmd, request.method) if cmd else None
    is_admin = await _is_admin(request, ctx)
    if spec is not None and spec.needs_admin and not is_admin:
        raise unauthorized(f"cmd {cmd!r} needs the admin password (HTTP basic auth)")
    body = await read_body(request, request.app[MAX_BODY_KEY] if is_admin else OPEN_BODY_BYTES)
    params, body = parameters(request, body)
    cmd = _single_cmd(params)
    request[CMD_KEY] = cmd
    spec = _command(cmd, request.method)
    if spec.needs_admin and not is_admin:
        raise unauthorized(f"cmd {cmd!r} needs the admin password (HTTP basic auth)")
    return await spec.handler(ctx, CnfRequest(request, params, body, is_admin))


async def handle_cnf(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    try:
        answer = await _answer(request, ctx)
    except ApiError as exc:
        cmd = request.get(CMD_KEY) or request.query.get("cmd", "")
        log.info("cnf %s refused: %d %s", cmd or "-", exc.status, exc.message)
        if exc.body is not None:
            response = web.Response(
                status=exc.status,
                text=json.dumps(exc.body),
                content_type="application/json",
                headers=exc.headers,
            )
        else:
            response = error_response(exc.status, exc.message, exc.headers, cmd or None)
    except StoreWriteError as exc:
        # The data directory refused a write: nothing was acknowledged; say why.
        cmd = request.get(CMD_KEY) or request.query.get("cmd", "")
        fault = disk_fault(exc)
        log.error("cnf %s: data directory fault: %s", cmd or "-", exc)
        response = error_response(fault.status, fault.message, cmd=cmd or None)
    else:
        response = web.Response(text=json.dumps(answer), content_type="application/json")
    if request.body_exists and not request.content.is_eof():
        # Refused before its body was read (or the body was too big or too slow): the
        # rest is not wanted, so the connection is not kept for another request.
        response.force_close()
    return response


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
    except Exception:
        # A bug, not bad input (bad input is refused with a 4xx on the way in): still a
        # JSON answer, with the details in the log only.
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal error (the service log has the details)")


def _requested_cmd(request: web.Request) -> str:
    """The cmd as handle_cnf read it: from the query, or from a form body once read."""
    cmd = request.get(CMD_KEY) or request.query.get("cmd", "")
    return cmd if isinstance(cmd, str) else ""


async def _count_cnf(request: web.Request, status: int) -> None:
    cmd = _requested_cmd(request)
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
    ctx: CnfContext,
    max_body_bytes: int,
    metrics: Metrics | None = None,
    dashboard: DashboardHub | None = None,
) -> web.Application:
    # The counting middleware comes first, so it sees the status json_errors answers with;
    # the browser guard's refusals and headers wrap every answer.
    middlewares: list[Any] = [browser_guard, json_errors]
    if metrics is not None:
        middlewares.insert(0, count_cnf_requests)
    app = web.Application(client_max_size=max_body_bytes, middlewares=middlewares)
    app[CONTEXT_KEY] = ctx
    app[MAX_BODY_KEY] = max_body_bytes
    if metrics is not None:
        app[METRICS_KEY] = metrics
        # HEAD too: uptime checks and scrapers probe with it.
        app.router.add_get("/metrics", handle_metrics)
    app.router.add_route("GET", "/cnf", handle_cnf)
    app.router.add_route("POST", "/cnf", handle_cnf)
    app.router.add_route("GET", "/ui/{lang}/sim.htm", handle_login_check)
    if dashboard is not None:
        add_dashboard(app, dashboard, ctx.state.registry)
    return app
