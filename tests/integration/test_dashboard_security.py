"""The dashboard's surface from an attacker's side, through a real port: a request another
site makes a browser send with the admin's credentials changes nothing, every page carries
the headers that keep it from being framed or sniffed, the page's files are served by name
only, and one peer cannot take every place on the live stream."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import pytest

from service.app import RunningService
from service.http.events import MAX_PER_ADDRESS
from tests.integration.conftest import GARAGE_EVSE, GRID_METER, Api
from tests.integration.sse_client import events, next_event

pytestmark = pytest.mark.integration

EVIL = "http://evil.example"


@pytest.fixture
async def site(api: Api) -> Api:
    await api.set_params({"devices": [GARAGE_EVSE, GRID_METER]})
    return api


async def devices(api: Api) -> set[str]:
    _, info = await api.get(cmd="get_dev_info")
    return {d["dev_id"] for d in info["devices"]}


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": EVIL},
        {"Origin": "null"},
        {"Referer": f"{EVIL}/page.html"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:1"},
    ],
    ids=["origin", "null-origin", "referer", "fetch-metadata", "other-port"],
)
async def test_a_cross_site_request_with_the_admins_credentials_is_refused(
    site: Api, headers: dict[str, str]
) -> None:
    auth = {**site.admin, **headers}
    status, answer = await site.get(auth, cmd="del_device", dev_id="M1")
    assert status == 403, answer
    assert "another site" in answer["error"]
    status, answer = await site.post({"devices": [{"dev_id": "E1", "name": "pwned"}]}, auth,
                                     cmd="set_params")  # fmt: skip
    assert status == 403, answer
    status, answer = await site.get(auth, cmd="override_device", dev_id="E1", flags="C")
    assert status == 403, answer
    # A cmd hidden in a form body is refused as well: it may change state.
    url = site.url
    async with site.session.post(url, data={"cmd": "del_device", "dev_id": "M1"},
                                 headers=auth) as resp:  # fmt: skip
        assert resp.status == 403
    assert await devices(site) == {"E1", "M1"}
    _, info = await site.get(cmd="get_dev_info")
    assert {d["dev_id"]: d["name"] for d in info["devices"]}["E1"] == "Garage"


async def test_the_same_site_and_clients_that_are_no_browser_keep_working(
    site: Api, service: RunningService
) -> None:
    own = f"http://127.0.0.1:{service.http_port}"
    for extra in ({"Origin": own}, {"Referer": f"{own}/ui/"}, {"Sec-Fetch-Site": "same-origin"},
                  {}):  # fmt: skip
        status, answer = await site.post({"devices": [{"dev_id": "E1", "name": "Carport"}]},
                                         {**site.admin, **extra}, cmd="set_params")  # fmt: skip
        assert (status, answer) == (200, "ok"), extra
    # Reading is harmless cross-site (the page cannot read the answer): still answered.
    status, _ = await site.get({**site.admin, "Origin": EVIL}, cmd="get_dev_info")
    assert status == 200
    # Without credentials there is nothing to abuse: the usual answer (401 here).
    status, _ = await site.get({"Origin": EVIL}, cmd="del_device", dev_id="M1")
    assert status == 401


async def test_every_answer_carries_the_security_headers(service: RunningService) -> None:
    base = f"http://127.0.0.1:{service.http_port}"
    async with aiohttp.ClientSession() as session:
        for path in ("/", "/ui/", "/ui/app.js", "/ui/style.css", "/cnf?cmd=get_params",
                     "/cnf?cmd=nope", "/nowhere", "/ui/device-types"):  # fmt: skip
            async with session.get(base + path) as resp:
                headers = resp.headers
                assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], path
                assert "script-src 'self'" in headers["Content-Security-Policy"], path
                assert headers["X-Content-Type-Options"] == "nosniff", path
                assert headers["X-Frame-Options"] == "DENY", path


async def test_the_pages_files_are_served_by_name_only(service: RunningService) -> None:
    base = f"http://127.0.0.1:{service.http_port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/ui/app.js") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/javascript")
            etag = resp.headers["ETag"]
        async with session.get(f"{base}/ui/app.js", headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304
        for path in ("/ui/..%2Fserver.py", "/ui/%2e%2e/cnf.py", "/ui/../pyproject.toml",
                     "/ui/events.py", "/ui/nothing.js", "/ui/static/app.js",
                     "/ui/app.js%00.html"):  # fmt: skip
            async with session.get(base + path) as resp:
                assert resp.status == 404, path
                body: Any = await resp.json(content_type=None)
                assert "error" in body


async def test_the_page_shows_an_anonymous_browser_nothing_of_the_site(
    site: Api, service: RunningService
) -> None:
    """The page itself holds no data; what it shows comes from the stream (the anonymous
    get_dev_info view) and from /cnf with the admin's credentials."""
    base = f"http://127.0.0.1:{service.http_port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/") as resp:
            page = await resp.text()
        async with session.get(f"{base}/cnf", params={"cmd": "get_devices"}) as resp:
            assert resp.status == 401
    assert "Garage" not in page and "E1" not in page


async def test_one_address_cannot_take_every_place_on_the_live_stream(
    site: Api, service: RunningService
) -> None:
    """The stream needs no credentials: a peer opening streams by the dozen is refused after
    MAX_PER_ADDRESS, while a browser from another address still gets its snapshot."""
    url = f"http://127.0.0.1:{service.http_port}/ui/events"
    async with contextlib.AsyncExitStack() as held:
        attacker = await held.enter_async_context(aiohttp.ClientSession())
        for n in range(MAX_PER_ADDRESS):
            resp = await held.enter_async_context(attacker.get(url))
            assert resp.status == 200, n
        for _ in range(3):
            async with attacker.get(url) as resp:
                assert resp.status == 429
                body = await resp.json()
                assert "too many dashboard connections from this address" in body["error"]
        # Another address (the loopback's 127.0.0.2 as source) is not locked out.
        other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=other) as session, session.get(url) as resp:
            assert resp.status == 200
            assert resp.headers["X-Frame-Options"] == "DENY"
            snapshot = await next_event(events(resp), "snapshot")
            assert {i["dev_id"] for i in snapshot.json()["infos"]} == {"E1", "M1"}
    # The attacker's streams closed: its address has its places back.
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            async with session.get(url) as resp:
                if resp.status == 200:
                    await next_event(events(resp), "snapshot")
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the address stayed locked out after its streams closed")
