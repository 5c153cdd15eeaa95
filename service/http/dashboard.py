"""The dashboard's routes: its page and files (package data, no build step), the device
types the setup pages offer, and the live event stream.

    GET /, /ui/           the page (live view; the setup pages are part of it: /ui/#setup)
    GET /ui/{file}        its scripts, style and icon, from service/http/static/
    GET /ui/events        the live stream (service/http/events.py)
    GET /ui/device-types  each device type's kind and how it is reached, for the setup page

Files are read once at start and served from memory, gzip-compressed for browsers that take
it, with an ETag so that a reload costs a 304. Only the files in the package's static folder
are served: a name is looked up, never joined to a path.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import logging
import mimetypes
from dataclasses import dataclass

from aiohttp import web

from service.core.device_types import DeviceTypeRegistry
from service.http.browser_guard import SECURITY_HEADERS
from service.http.events import DashboardHub

log = logging.getLogger(__name__)

STATIC_PACKAGE = "service.http"
STATIC_DIR = "static"
INDEX = "index.html"

HUB_KEY = web.AppKey("dashboard_hub", DashboardHub)
REGISTRY_KEY = web.AppKey("dashboard_registry", DeviceTypeRegistry)
FILES_KEY = web.AppKey("dashboard_files", dict)

# Default TCP ports of the Modbus device types, for the setup page's address hint.
DEFAULT_PORTS = {"evse_powerbrain": 4701}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    gzipped: bytes
    content_type: str
    etag: str


def _content_type(name: str) -> str:
    if name.endswith(".js"):
        return "text/javascript; charset=utf-8"
    guessed, _ = mimetypes.guess_type(name)
    if guessed is None:
        return "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed


def load_static_files() -> dict[str, StaticFile]:
    files: dict[str, StaticFile] = {}
    folder = importlib.resources.files(STATIC_PACKAGE).joinpath(STATIC_DIR)
    for entry in folder.iterdir():
        if not entry.is_file() or entry.name.startswith("."):
            continue
        body = entry.read_bytes()
        files[entry.name] = StaticFile(
            body=body,
            gzipped=gzip.compress(body, compresslevel=9, mtime=0),
            content_type=_content_type(entry.name),
            etag=f'"{hashlib.sha256(body).hexdigest()[:16]}"',
        )
    return files


def _serve(request: web.Request, name: str) -> web.Response:
    files: dict[str, StaticFile] = request.app[FILES_KEY]
    found = files.get(name)
    if found is None:
        raise web.HTTPNotFound()
    # The security headers come from the browser_guard middleware, as on every answer.
    headers = {
        "ETag": found.etag,
        # Checked on every load (a 304 when unchanged), so an update shows at once.
        "Cache-Control": "no-cache",
        "Vary": "Accept-Encoding",
    }
    if request.headers.get("If-None-Match") == found.etag:
        return web.Response(status=304, headers=headers)
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        body = found.gzipped
    else:
        body = found.body
    headers["Content-Type"] = found.content_type
    return web.Response(body=body, headers=headers)


async def handle_index(request: web.Request) -> web.Response:
    return _serve(request, INDEX)


async def handle_file(request: web.Request) -> web.Response:
    return _serve(request, request.match_info["name"])


async def handle_events(request: web.Request) -> web.StreamResponse:
    # The stream is prepared in the handler, before the middleware could add its headers.
    return await request.app[HUB_KEY].stream(request, SECURITY_HEADERS)


async def handle_device_types(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY_KEY]
    types = {}
    for name in registry.names():
        device_type = registry.get(name)
        types[name] = {
            "kind": device_type.kind,
            "display_name": device_type.display_name,
            "transport": device_type.transport,
            "default_port": DEFAULT_PORTS.get(
                name, 502 if device_type.transport == "modbus" else 0
            ),
        }
    return web.json_response(types)


async def _redirect_ui(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


def add_dashboard(app: web.Application, hub: DashboardHub, registry: DeviceTypeRegistry) -> None:
    """The dashboard's routes on the service's application; streams end on shutdown."""
    app[HUB_KEY] = hub
    app[REGISTRY_KEY] = registry
    app[FILES_KEY] = load_static_files()

    async def end_streams(_: web.Application) -> None:
        hub.close()

    app.on_shutdown.append(end_streams)
    app.router.add_route("GET", "/", handle_index)
    app.router.add_route("GET", "/ui", _redirect_ui)
    app.router.add_route("GET", "/ui/", handle_index)
    app.router.add_route("GET", "/ui/events", handle_events)
    app.router.add_route("GET", "/ui/device-types", handle_device_types)
    app.router.add_route("GET", r"/ui/{name:[A-Za-z0-9_-]+\.(?:js|css|svg|html)}", handle_file)
