"""What a browser needs to be safe with chargebus: no cross-site requests with the admin's
credentials, and the usual headers that keep pages from being framed, sniffed or made to
load foreign scripts.

Why: /cnf changes state on GET (the product's API requires it) and authenticates with HTTP
basic auth, which a browser attaches by itself to every request to the site once it knows
the credentials — also to a request another site makes it send (an <img> or a form pointing
at /cnf). Such a request names the other site in `Origin` (fetch, forms, every POST) or
`Referer`, and modern browsers add `Sec-Fetch-Site: cross-site`. A request with credentials
whose headers name another site is refused (403) unless its command only reads, before the
credentials are checked. Requests without these headers (curl, Home Assistant, scripts) are
not browsers' and stay as they were.
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any

from aiohttp import web

from service.http.errors import error_response

log = logging.getLogger(__name__)

# Commands that only read: a cross-site page cannot read their answers (no CORS headers),
# so sending them with credentials does no harm.
READ_ONLY_COMMANDS = frozenset(
    {
        "get_dev_info",
        "get_params",
        "get_dev_types",
        "get_devices",
        "get_users",
        "get_user",
        "get_new_user_id",
    }
)

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # The dashboard's own requests need no Referer beyond the site itself.
    "Referrer-Policy": "same-origin",
}


def _origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of a URL, lower case; None for "null" or what is no URL."""
    parsed = urllib.parse.urlsplit(url.strip())
    if not parsed.scheme or not parsed.netloc:
        return None
    return f"{parsed.scheme.lower()}://{parsed.netloc.lower()}"


def foreign_site(request: web.Request) -> str | None:
    """What names another site in the request's headers, or None when nothing does."""
    own_host = request.host.lower()
    fetch_site = request.headers.get("Sec-Fetch-Site", "").lower()
    if fetch_site == "cross-site" or fetch_site == "same-site":
        # same-site is another origin on the same registrable domain (another device on
        # the same host name's siblings): still not this service's own page.
        return f"Sec-Fetch-Site: {fetch_site}"
    origin = request.headers.get("Origin")
    if origin is not None:
        named = _origin_of(origin)
        if named is None or urllib.parse.urlsplit(named).netloc != own_host:
            return f"Origin: {origin[:200]}"
        return None
    referer = request.headers.get("Referer")
    if referer is not None:
        named = _origin_of(referer)
        if named is None or urllib.parse.urlsplit(named).netloc != own_host:
            return f"Referer: {(named or referer)[:200]}"
    return None


def _refused_cross_site(request: web.Request) -> web.Response | None:
    if request.path != "/cnf" or "Authorization" not in request.headers:
        return None
    cmd = request.query.get("cmd", "")
    # A cmd in a form body is not known yet: it may change state.
    if cmd in READ_ONLY_COMMANDS and request.method == "GET":
        return None
    named = foreign_site(request)
    if named is None:
        return None
    log.warning(
        "refused a cross-site request with credentials: cmd %r from %s (%s)",
        cmd or "-",
        request.remote,
        named,
    )
    response = error_response(
        403,
        "refused: a request with credentials sent from another site "
        f"({named}); use chargebus's own pages or a client that is no browser",
        cmd=cmd or None,
    )
    if request.body_exists:
        response.force_close()
    return response


@web.middleware
async def browser_guard(request: web.Request, handler: Any) -> web.StreamResponse:
    refused = _refused_cross_site(request)
    response: web.StreamResponse = refused if refused is not None else await handler(request)
    if not response.prepared:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    return response
