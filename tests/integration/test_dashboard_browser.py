"""The dashboard in a real browser (headless chromium driven by Playwright) against the real
service, its simulated Power Brains and grid meter over Modbus TCP, and a real mosquitto: the
demo's devices appear; the bars and numbers follow a change on the bus within a second; each
action reaches the bus as a command and shows on the tile; a device added on the setup page is
polled; an API error appears at its field; the page recovers after the service restarts; a
cross-site request with the admin's credentials is refused.

One browser for the module (each test opens its own context); one service per test.
The first test saves a screenshot of the demo: to $CHARGEBUS_SCREENSHOT when set (`make
screenshot` writes docs/dashboard.png), else into the test's temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from bridges.sim.car import Car
from bridges.sim.server import SimSite, simulated_site
from service.app import RunningService, running_service
from service.demo import BASE_LOAD_MA, configure, demo_devices
from service.embedded_broker import free_port
from service.settings import Settings
from service.topics import Topics
from tests.integration.browser import ARGS, chromium_path, skip_reason
from tests.integration.conftest import ADMIN_PASSWORD, Api
from tests.integration.mqtt_observer import MqttObserver
from tests.integration.waiting import eventually

_skip = skip_reason()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(_skip is not None, reason=_skip or ""),
]

if _skip is None:
    from playwright.async_api import Browser, Page, async_playwright, expect

HOST = "127.0.0.1"
# The HTTP-input wallbox whose states the tests publish on the bus themselves.
# Its L1 is on grid phase L2 (rotation 1), beside the single-phase car on L1.
CARPORT = {"dev_type": "evse_ajax", "dev_id": "E3", "name": "Carport (HTTP input)",
           "min_charging_cur": 6000, "max_charging_cur": 16000, "phase_rotation": 1,
           "address": ""}  # fmt: skip


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    path = chromium_path()
    assert path is not None
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=path, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Site:
    service: RunningService
    sim: SimSite
    spare_port: int  # a third simulated Power Brain that no device names yet
    grid_port: int
    api: Api
    # What the HTTP-input wallbox E3 reports, every half second (as a wallbox that pushes
    # its values would): (state, current on its L1 in mA).
    carport: tuple[int, int] | None = (1, 0)
    # The OCPP status a bridge would report with it (an OCPP wallbox's StatusNotification).
    carport_ocpp: str = ""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.service.http_port}/"


@contextlib.asynccontextmanager
async def demo_site(settings: Settings) -> AsyncIterator[Site]:
    """The demo's installation (two Power Brains with cars, a grid meter, a 25 A fuse) plus
    an HTTP-input wallbox and a spare simulated Power Brain."""
    ports = [free_port(HOST) for _ in range(3)]
    grid_port = free_port(HOST)
    cars: list[Car | None] = [Car(phases=3, ramp_ma_per_s=6000), Car(phases=1, ramp_ma_per_s=6000)]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await configure(settings.data_dir, [*demo_devices(ports[:2], grid_port), CARPORT])
    async with (
        simulated_site(HOST, ports, grid_port, base_load_ma=BASE_LOAD_MA, cars=cars) as sim,
        running_service(settings) as service,
        aiohttp.ClientSession() as session,
    ):
        await service.bus.wait_connected(10)
        site = Site(service, sim, ports[2], grid_port, Api(session, service.http_port))
        topic = Topics(settings.base_topic).state("E3")

        async def push() -> None:
            while True:
                if site.carport is not None:
                    state, current = site.carport
                    payload = evse_state(current, state, site.carport_ocpp)
                    await service.bus.publish(topic, payload)
                await asyncio.sleep(0.5)

        pusher = asyncio.create_task(push())
        try:
            yield site
        finally:
            pusher.cancel()


@pytest_asyncio.fixture(loop_scope="module")
async def site(settings: Settings) -> AsyncIterator[Site]:
    async with demo_site(settings) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1100, "height": 900})
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield opened
    finally:
        await context.close()
    assert not errors, f"the page's scripts failed: {errors}"


def tile(page: Page, dev_id: str) -> Any:
    return page.locator(f'.tile[data-dev="{dev_id}"]')


def evse_state(current_ma: int, state: int = 3, ocpp_status: str = "") -> bytes:
    return json.dumps(
        {"ts": time.time(), "state": state, "current": [current_ma, 0, 0], "total_energy": 4200,
         "ocpp_status": ocpp_status}
    ).encode()  # fmt: skip


async def log_in(page: Page) -> None:
    dialog = page.locator("#login-dialog")
    await expect(dialog).to_be_visible()
    await dialog.locator("input[name=password]").fill(ADMIN_PASSWORD)
    await dialog.locator("button[type=submit]").click()
    await expect(dialog).to_be_hidden()


async def test_the_demo_appears_and_follows_the_bus_within_a_second(
    site: Site, page: Page, observer: MqttObserver, settings: Settings, tmp_path: Path
) -> None:
    await page.goto(site.url)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    names = {"E1": "Wallbox 1", "E2": "Wallbox 2", "M1": "Grid", "E3": "Carport"}
    for dev_id, name in names.items():
        await expect(tile(page, dev_id).locator("h3")).to_contain_text(name)
    # The cars charge, the grid shows its phases against the fuse, the chart has lines.
    await expect(tile(page, "E1").locator(".badge")).to_have_text("Charging", timeout=20_000)
    await expect(tile(page, "E2").locator(".badge")).to_have_text("Charging", timeout=20_000)
    await expect(page.locator("#fuse")).to_have_text("fuse 25.0 A")
    await expect(page.locator("#grid-phases .phase")).to_have_count(3)
    await expect(tile(page, "M1").locator('[data-f="c1"]')).not_to_have_text("0.0 A")

    # A state on the bus: the tile's bar and numbers follow within a second.
    topic = Topics(settings.base_topic).state("E3")
    l1 = tile(page, "E3").locator(".phase").first.locator(".value")
    for current, shown in ((7300, "7.3 /"), (9100, "9.1 /")):
        site.carport = (3, current)
        await asyncio.to_thread(observer.publish, topic, evse_state(current))
        published = time.monotonic()
        await expect(l1).to_contain_text(shown, timeout=1000)
        assert time.monotonic() - published < 1.0
    await expect(tile(page, "E3").locator(".badge")).to_have_text("Charging")
    # No OCPP status, no OCPP row; one reported by the wallbox's bridge shows.
    await expect(tile(page, "E3").locator('[data-f="ocpp"]')).to_be_hidden()
    site.carport_ocpp = "SuspendedEV"
    await expect(tile(page, "E3").locator('[data-f="ocpp"]')).to_have_text("SuspendedEV")
    fill = tile(page, "E3").locator(".phase .fill").first
    width = await fill.evaluate("el => parseFloat(el.style.width)")
    assert 50 < width <= 100  # 9.1 A on a bar scaled to its 16 A maximum
    # Let the chart gather a few samples, then the picture for the README.
    await expect(page.locator("#chart polyline.evse").first).to_be_attached(timeout=10_000)
    await asyncio.sleep(4)
    target = Path(os.environ.get("CHARGEBUS_SCREENSHOT") or tmp_path / "dashboard.png")
    picture = await page.screenshot(path=str(target), full_page=True)
    assert len(picture) > 10_000

    # Why each gets what it gets, in words; the session's energy.
    await expect(tile(page, "E1").locator(".reason")).to_have_text(
        "limited by the load management"
    )
    await expect(tile(page, "E3").locator('[data-f="session"]')).to_contain_text("kWh since")
    # A wallbox that stops reporting: a communication error on its tile.
    site.carport = None
    await expect(tile(page, "E3")).to_have_class("tile evse com-err", timeout=15_000)
    await expect(tile(page, "E3").locator('[data-f="com"]')).to_contain_text(
        "Communication error"
    )
    # A fuse below what the grid draws: the overdraft shows in red.
    await site.api.set_params({"max_total_current": 10_000})
    await expect(page.locator("#overdraft")).to_be_visible()
    await expect(page.locator("#grid-phases .bar.over").first).to_be_visible()
    # No room for both cars' minimums on L1 any more: one pauses, with its timer.
    paused = page.locator('.tile.evse [data-f="pause"]', has_text="Paused for")
    await expect(paused.first).to_be_visible(timeout=20_000)


async def test_each_action_reaches_the_bus_and_shows_on_the_tile(
    site: Site, page: Page, observer: MqttObserver, settings: Settings
) -> None:
    command = Topics(settings.base_topic).command("E1")
    await page.goto(site.url)
    e1 = tile(page, "E1")
    await expect(e1.locator(".badge")).to_have_text("Charging", timeout=20_000)
    await e1.locator(".actions summary").click()

    # Limit: the page asks for the admin password, then the command follows the limit.
    await e1.locator('input[name="amps"]').fill("7")
    observer.clear()
    await e1.locator('form[data-action="limit"] button[type=submit]').click()
    await log_in(page)
    await expect(e1.locator('[data-f="answer"]')).to_have_text("Limit: done")
    await observer.wait(command, lambda m: 0 < m.json()["charging_current"] <= 7000)
    await expect(e1.locator('[data-f="overrides"]')).to_contain_text("Limited by hand to 7.0 A")

    observer.clear()
    await e1.locator('button[data-action="pause"]').click()
    await expect(e1.locator('[data-f="answer"]')).to_have_text("Pause: done")
    await observer.wait(command, lambda m: m.json()["charging_enabled"] is False)
    await expect(e1.locator('[data-f="overrides"]')).to_contain_text("Charging switched off")

    observer.clear()
    await e1.locator('button[data-action="resume"]').click()
    await observer.wait(command, lambda m: m.json()["charging_enabled"] is True)
    await expect(e1.locator('[data-f="overrides"]')).not_to_contain_text("switched off")

    await e1.locator('button[data-action="rules_off"]').click()
    await expect(e1.locator('[data-f="overrides"]')).to_contain_text("Charging rules off")

    # An RFID/PIN nobody has: the API's refusal shows on the tile.
    await e1.locator('input[name="rfid"]').fill("0000")
    await e1.locator('form[data-action="rfid"] button[type=submit]').click()
    answer = e1.locator('[data-f="answer"]')
    await expect(answer).to_have_text("RFID/PIN: RFID/PIN refused: unknown_rfid")
    await expect(answer).to_have_class("answer failed")

    # A wallbox only Anna may use: it waits for her PIN, and then shows her name.
    status, _ = await site.api.post({"name": "Anna", "display": True, "dev_ids": ["E3"],
                                     "rfids": [{"id": "1234"}]}, site.api.admin,
                                    cmd="set_user")  # fmt: skip
    assert status == 200
    anna = (await site.api.ok(cmd="get_users"))[0]["id"]
    await site.api.set_params({"devices": [{"dev_id": "E3", "users": [anna]}]})
    site.carport = (2, 0)
    e3 = tile(page, "E3")
    await expect(e3.locator(".reason")).to_have_text("waits for an RFID/PIN", timeout=10_000)
    await e3.locator(".actions summary").click()
    await e3.locator('input[name="rfid"]').fill("1234")
    await e3.locator('form[data-action="rfid"] button[type=submit]').click()
    await expect(e3.locator('[data-f="answer"]')).to_have_text("RFID/PIN: done")
    await expect(e3.locator('[data-f="user"]')).to_have_text("Anna")


async def test_a_device_added_on_the_setup_page_is_polled_and_errors_show_at_their_field(
    site: Site, page: Page
) -> None:
    await page.goto(site.url + "#setup/devices")
    await page.locator("#setup-login button").click()
    await log_in(page)
    await expect(page.locator('[data-form="add-device"]')).to_be_visible()

    # A wallbox: the Power Brain nobody configured yet.
    await page.select_option('select[name="dev_type"]', "evse_powerbrain")
    await page.locator('[data-form="add-device"] button').click()
    form = page.locator('form[data-form="device"]')
    await form.locator('[data-path="name"]').fill("Garage door")
    await form.locator('[data-path="address"]').fill(f"{HOST}:{site.spare_port}")
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#setup-status")).to_have_text("Saved.")
    await expect(page.locator(".list-item", has_text="Garage door")).to_be_visible()

    # A second meter on the simulated grid meter, for display.
    await page.select_option('select[name="dev_type"]', "meter_sdm630")
    await page.locator('[data-form="add-device"] button').click()
    await form.locator('[data-path="name"]').fill("Sub-meter")
    await form.locator('[data-path="address"]').fill(f"{HOST}:{site.grid_port}")
    await form.locator('[data-path="role"]').select_option("0")
    await form.locator("button[type=submit]").click()
    await expect(page.locator(".list-item", has_text="Sub-meter")).to_be_visible()

    # A value the API refuses: its error shows at the field, in A as the field shows it.
    await page.select_option('select[name="dev_type"]', "evse_ajax")
    await page.locator('[data-form="add-device"] button').click()
    await form.locator('[data-path="max_charging_cur"]').fill("99")
    await form.locator("button[type=submit]").click()
    error = form.locator('[data-error-for="max_charging_cur"]')
    await expect(error).to_contain_text("less than or equal to 80 A")
    await expect(form.locator('[data-path="max_charging_cur"]')).to_have_attribute(
        "aria-invalid", "true"
    )

    # Polled: the live view shows the new wallbox's own state (no vehicle), not "Offline",
    # and the sub-meter's reading.
    await page.locator('a[data-view="live"]').click()
    garage = page.locator(".tile.evse", has_text="Garage door")
    await expect(garage.locator(".badge")).to_have_text("No vehicle", timeout=15_000)
    await expect(garage.locator('[data-f="com"]')).to_have_text("")
    sub = page.locator(".tile.meter", has_text="Sub-meter")
    await expect(sub.locator('[data-f="c1"]')).not_to_have_text("0.0 A", timeout=15_000)
    _, info = await site.api.get(cmd="get_dev_info")
    polled = {d["name"]: d for d in info["devices"]}
    assert polled["Garage door"]["model"].startswith("cFos,Power Brain,")
    assert polled["Sub-meter"]["com_err"] is False


async def test_the_installation_groups_and_users_are_set_up_on_their_pages(
    site: Site, page: Page
) -> None:
    await page.goto(site.url + "#setup/params")
    await page.locator("#setup-login button").click()
    await log_in(page)
    params = page.locator('form[data-form="params"]')
    await params.locator('[data-path="max_total_current"]').fill("30")
    await params.locator("button[type=submit]").click()
    await expect(page.locator("#setup-status")).to_have_text("Saved.")

    await page.locator('#setup-tabs a[data-tab="groups"]').click()
    groups = page.locator('form[data-form="groups"]')
    await groups.get_by_role("button", name="Add a group").click()
    await groups.locator('[data-path="groups.0.name"]').fill("Garage")
    await groups.locator('[data-path="groups.0.max_current"]').fill("20")
    await groups.locator("button[type=submit]").click()
    await expect(page.locator("#setup-status")).to_have_text("Saved.")

    await page.locator('#setup-tabs a[data-tab="users"]').click()
    await page.get_by_role("button", name="Add a user").click()
    user = page.locator('form[data-form="user"]').last
    await user.locator('[data-path="name"]').fill("Anna")
    await user.locator("fieldset", has_text="May charge at").get_by_text("Wallbox 1").click()
    await user.get_by_role("button", name="Add an RFID/PIN").click()
    await user.locator('[data-path="rfids.0.id"]').fill("1234")
    await user.get_by_role("button", name="Save").click()
    await expect(page.locator('form[data-form="user"] h3', has_text="Anna")).to_be_visible()
    # The same PIN for a second user: refused, and the error shows at the PINs.
    await page.get_by_role("button", name="Add a user").click()
    other = page.locator('form[data-form="user"]').last
    await other.locator('[data-path="name"]').fill("Ben")
    await other.get_by_role("button", name="Add an RFID/PIN").click()
    await other.locator('[data-path="rfids.0.id"]').fill("1234")
    await other.get_by_role("button", name="Save").click()
    await expect(other.locator('[data-error-for="rfids"]')).to_contain_text(
        "already belongs to another user"
    )

    users = await site.api.ok(cmd="get_users")
    assert [(u["name"], u["dev_ids"], [r["id"] for r in u["rfids"]]) for u in users] == [
        ("Anna", ["E1"], ["1234"])
    ]
    await page.locator('a[data-view="live"]').click()
    await expect(page.locator("#fuse")).to_have_text("fuse 30.0 A")
    await expect(page.locator('#group-tree [data-group="1"] h3')).to_contain_text("Garage")


async def test_the_page_recovers_after_the_service_restarts(
    page: Page, settings: Settings
) -> None:
    settings = settings.model_copy(update={"http_port": free_port(HOST)})
    async with demo_site(settings) as first:
        await page.goto(first.url)
        await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        await expect(tile(page, "E1")).to_be_visible()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    async with demo_site(settings) as second:
        await second.api.set_params({"title": "after the restart"})
        await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=15_000)
        await expect(page.locator("#site-title")).to_have_text("after the restart")
        await expect(tile(page, "E1").locator(".badge")).to_have_text("Charging", timeout=20_000)


@contextlib.asynccontextmanager
async def evil_site(target: str) -> AsyncIterator[str]:
    """Another site (localhost: another site than 127.0.0.1) whose page makes the browser
    send state-changing /cnf requests to chargebus: an image, a hidden-referrer image, and a
    form posted by script."""
    page = f"""<!doctype html><html><head><meta charset="utf-8"></head><body>
<img src="{target}/cnf?cmd=del_device&amp;dev_id=E2">
<iframe srcdoc='<meta name="referrer" content="no-referrer">
<img src="{target}/cnf?cmd=del_device&amp;dev_id=M1">'></iframe>
<form id="f" method="POST" action="{target}/cnf?cmd=set_params" enctype="text/plain">
<input name='{{"devices":[{{"dev_id":"E1","name":"pwned","x":"' value='"}}]}}'></form>
<script>
// Once both images are answered: the form's navigation would cancel them in flight.
window.onload = () => document.getElementById("f").submit();
</script>
</body></html>"""
    app = web.Application()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port(HOST)
    await web.TCPSite(runner, HOST, port).start()
    try:
        yield f"http://localhost:{port}/"
    finally:
        await runner.cleanup()


async def refused(site: Site) -> bool:
    """True once the service has counted (/metrics) the form's set_params refused by the
    guard (403) and both images' del_device refused (403 by the guard, or 401 when the
    browser sent no credentials with them: chromium keeps cached credentials from
    cross-site images)."""
    url = f"http://{HOST}:{site.service.http_port}/metrics"
    async with site.api.session.get(url) as response:
        text = await response.text()
    counts: dict[tuple[str, str], int] = {}
    for line in text.splitlines():
        if line.startswith("chargebus_http_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            cmd = labels.split('cmd="')[1].split('"')[0]
            status = labels.split('status="')[1].split('"')[0]
            counts[cmd, status] = int(float(value))
    deletes = counts.get(("del_device", "403"), 0) + counts.get(("del_device", "401"), 0)
    return counts.get(("set_params", "403"), 0) >= 1 and deletes >= 2


async def test_a_cross_site_request_with_the_admins_credentials_is_refused(
    site: Site, browser: Browser
) -> None:
    # A browser that holds the admin's credentials and sends them with every request, as one
    # does after the admin logged in with its own basic-auth prompt.
    context = await browser.new_context(
        http_credentials={"username": "admin", "password": ADMIN_PASSWORD, "send": "always"}
    )
    sent: list[str] = []
    try:
        page = await context.new_page()
        # It works for the site's own pages...
        await page.goto(site.url)
        status = await page.evaluate(
            "fetch('/cnf?cmd=override_device&dev_id=E3&flags=C').then(r => r.status)"
        )
        assert status == 200
        # ...not for another site's: an image, one with no Referer, a form posted by script.
        context.on("request", lambda r: sent.append(r.url) if "/cnf" in r.url else None)
        async with evil_site(site.url.rstrip("/")) as evil:
            await page.goto(evil)
            await eventually(lambda: len(sent) >= 3, f"the three requests; saw {sent}")
            await eventually(lambda: refused(site), f"three refusals counted; sent {sent}")
    finally:
        await context.close()
    _, info = await site.api.get(cmd="get_dev_info")
    names = {d["dev_id"]: d["name"] for d in info["devices"]}
    assert set(names) == {"M1", "E1", "E2", "E3"}
    assert names["E1"] != "pwned"
