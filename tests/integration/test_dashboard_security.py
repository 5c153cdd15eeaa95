"""The dashboard's surface from an attacker's side, through a real port: a request another
site makes a browser send with the admin's credentials changes nothing, every page carries
the headers that keep it from being framed or sniffed, and the page's files are served by
name only."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from service.app import RunningService
from tests.integration.conftest import GARAGE_EVSE, GRID_METER, Api

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
