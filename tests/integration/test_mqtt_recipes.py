"""Every shell example of docs/mqtt.md, run as written against the quick start's broker:
`chargebus demo` with its embedded broker (mosquitto, a child process of chargebus), Debian's
mosquitto_pub / mosquitto_sub and jq, in bash.

The examples are read from the page itself. Two changes are made to them: the port
(`-h 127.0.0.1` becomes `-h 127.0.0.1 -p PORT`, as the page says to do), and an example that
watches (mosquitto_sub without -C) stops after a few seconds (-W). Each has a check here,
keyed by what it runs: an example added to the page without a check fails the run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.mosquitto_child import find_mosquitto
from tests.broker import find_free_port
from tests.integration.mqtt_observer import MqttObserver

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "mqtt.md"
PASSWORD = "recipes-pw"
# How long a recipe that watches (mosquitto_sub without -C) is left running.
WATCH_S = 3
# mosquitto_sub's exit code when its -W time ran out.
SUB_TIMED_OUT = 27
RECIPE_TIMEOUT_S = 20.0
DEMO_READY_S = 60.0


def shell_examples(text: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"```sh\n(.*?)```", text, re.DOTALL)]


def aimed_at(recipe: str, port: int) -> str:
    """The recipe against `port`; every client of it must name the documented host."""
    for command in re.findall(r"mosquitto_(?:pub|sub)[^\n|]*", recipe.replace("\\\n", " ")):
        assert "-h 127.0.0.1" in command, f"a client without -h 127.0.0.1: {command}"
    return recipe.replace("-h 127.0.0.1", f"-h 127.0.0.1 -p {port}")


@dataclass
class Demo:
    http_port: int
    mqtt_port: int
    log_path: Path

    def cnf(self, admin: bool = False, body: Any = None, **params: str) -> Any:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/cnf?{query}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        if admin:
            token = b64encode(f"admin:{PASSWORD}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())

    def set_params(self, body: Any) -> None:
        assert self.cnf(admin=True, body=body, cmd="set_params") == "ok"

    def device(self, dev_id: str) -> dict[str, Any]:
        devices = {d["dev_id"]: d for d in self.cnf(cmd="get_dev_info")["devices"]}
        found: dict[str, Any] = devices[dev_id]
        return found

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def eventually(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:g} s: {what}")
        time.sleep(0.1)


def _charging(demo: Demo) -> bool:
    """Both cars charge."""
    try:
        devices: list[dict[str, Any]] = demo.cnf(cmd="get_dev_info")["devices"]
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
    return sum(1 for d in devices if d.get("state") == 3) == 2


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    for tool in ("mosquitto_pub", "mosquitto_sub", "jq"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/ensure-mosquitto.sh installs it)")
    if find_mosquitto() is None:
        pytest.skip("no mosquitto binary: the demo would run amqtt, whose caveats the page names")
    tmp = tmp_path_factory.mktemp("recipes")
    demo = Demo(find_free_port(), find_free_port(), tmp / "demo.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEBUS_")}
    command = [
        sys.executable, "-m", "service", "demo", "--http-port", str(demo.http_port),
        "--admin-password", PASSWORD, "--data-dir", str(tmp / "data"),
        "--embedded-broker-port", str(demo.mqtt_port),
    ]  # fmt: skip
    with demo.log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + DEMO_READY_S
        while not _charging(demo):
            assert process.poll() is None, demo.log()
            assert time.monotonic() < deadline, f"the demo did not start:\n{demo.log()}"
            time.sleep(0.2)
        yield demo
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def run_recipe(recipe: str, demo: Demo) -> list[str]:
    """The recipe in bash. One that watches (mosquitto_sub without -C) gets `-W WATCH_S`, so
    that its client ends by itself and whatever reads from it (jq) sees the end and flushes."""
    script = aimed_at(recipe, demo.mqtt_port)
    watches = [c for c in re.findall(r"mosquitto_sub[^\n|]*", script) if "-C " not in c]
    for command in watches:
        limited = command.replace("mosquitto_sub", f"mosquitto_sub -W {WATCH_S}", 1)
        script = script.replace(command, limited)
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", script],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RECIPE_TIMEOUT_S,
        check=False,
    )
    # 27: mosquitto_sub's -W ran out, the end of a watch.
    assert done.returncode == (SUB_TIMED_OUT if watches else 0), f"{script}\n{done.stderr}"
    return [line for line in done.stdout.splitlines() if line]


# -- the checks, one per example --------------------------------------------------------------

E1_DEFAULTS = {"dev_id": "E1", "max_charging_cur": 16000, "min_charging_cur": 6000, "prio": 1}


def check_set(demo: Demo, run: Callable[[], list[str]]) -> None:
    demo.set_params({"devices": [E1_DEFAULTS]})
    assert run() == []

    def applied() -> bool:
        e1 = demo.device("E1")
        return (e1["max_charging_cur"], e1["min_charging_cur"], e1["prio"]) == (10000, 8000, 2)

    eventually(applied, "E1 has max 10000, min 8000, prio 2")
    demo.set_params({"devices": [E1_DEFAULTS]})


def check_read_one_device(demo: Demo, run: Callable[[], list[str]]) -> None:
    answer = json.loads("\n".join(run()))
    assert set(answer) == {
        "state", "charging_current", "power_w", "max_charging_cur", "com_err", "lreason"
    }  # fmt: skip
    # E1's info, not another device's retained topic (nulls for what a meter lacks).
    assert answer["max_charging_cur"] == 16000
    assert answer["state"] == 3 and answer["charging_current"] >= 6000
    assert not answer["com_err"]


def check_params(demo: Demo, run: Callable[[], list[str]]) -> None:
    answer = json.loads("\n".join(run()))
    assert answer["max_total_current"] == 25000
    assert answer["cons_evse_power"] > 0 and isinstance(answer["avail_evse_power"], int)


def check_change_and_read_back(demo: Demo, run: Callable[[], list[str]]) -> None:
    demo.set_params({"devices": [E1_DEFAULTS]})
    assert demo.device("E1")["max_charging_cur"] == 16000
    assert run() == ["10000"]
    demo.set_params({"devices": [E1_DEFAULTS]})


def check_watch_availability(demo: Demo, run: Callable[[], list[str]]) -> None:
    # Each retained status once, nothing else.
    assert sorted(run()) == ["chargebus/bridges/modbus/status online", "chargebus/status online"]


def check_watch_commands_and_states(demo: Demo, run: Callable[[], list[str]]) -> None:
    lines = run()
    topics = {line.split(" ", 1)[0] for line in lines}
    pattern = re.compile(r"chargebus/devices/(E1|E2|M1)/(command|state)")
    assert all(pattern.fullmatch(t) for t in topics), topics
    assert {
        "chargebus/devices/E1/command", "chargebus/devices/E2/command",
        "chargebus/devices/E1/state", "chargebus/devices/E2/state", "chargebus/devices/M1/state",
    } <= topics  # fmt: skip
    for line in lines:
        assert isinstance(json.loads(line.split(" ", 1)[1]), dict), line


def check_watch_allocation(demo: Demo, run: Callable[[], list[str]]) -> None:
    rows = [json.loads(line) for line in run()]
    assert {r["dev_id"] for r in rows} == {"E1", "E2"}
    assert all(set(r) == {"dev_id", "charging_current", "lreason", "state"} for r in rows)


def check_feed_a_meter(demo: Demo, run: Callable[[], list[str]]) -> None:
    demo.set_params({"devices": [{"dev_type": "meter_ajax", "dev_id": "M2", "name": "recipe"}]})
    try:
        assert run() == []

        def fed() -> bool:
            m2 = demo.device("M2")
            return (m2.get("power_w"), m2.get("current_l1")) == (6210, 10000)

        eventually(fed, "M2 shows the published state")
    finally:
        assert demo.cnf(admin=True, cmd="del_device", dev_id="M2") == "ok"


# What each example runs (its first command, normalised) -> its check.
CHECKS: dict[str, Callable[[Demo, Callable[[], list[str]]], None]] = {
    "pub E1/set max_charging_cur + pub E1/set prio": check_set,
    "sub -C 1 E1/info | jq": check_read_one_device,
    "sub -C 1 params | jq": check_params,
    "pub E1/set max_charging_cur + sub -C 1 E1/info | jq": check_change_and_read_back,
    "sub -v status bridges/+/status": check_watch_availability,
    "sub -v +/command +/state": check_watch_commands_and_states,
    "sub +/info | jq": check_watch_allocation,
    "pub M2/state": check_feed_a_meter,
}


def signature(recipe: str) -> str:
    """A short, stable name of what a recipe does: each client, its topics, a jq."""
    parts = []
    joined = recipe.replace("\\\n", " ")
    for command in re.split(r"\n", joined):
        client = re.search(r"mosquitto_(pub|sub)", command)
        if client is None:
            continue
        topics = [t.removeprefix("chargebus/").removeprefix("devices/")
                  for t in re.findall(r"-t '?([^' ]+)'?", command)]  # fmt: skip
        flags = [f for f in ("-C 1", "-v") if f in command]
        text = " ".join([client.group(1), *flags, *topics])
        if client.group(1) == "pub":
            payload = re.search(r"-m '\{\"(\w+)\"", command)
            text += f" {payload.group(1)}" if payload and "E1/set" in command else ""
        if "| jq" in command:
            text += " | jq"
        parts.append(text)
    return " + ".join(parts)


RECIPES = shell_examples(DOC.read_text())


def test_every_example_has_a_check() -> None:
    assert len(RECIPES) >= 8
    assert sorted(signature(r) for r in RECIPES) == sorted(CHECKS)


@pytest.mark.parametrize("recipe", RECIPES, ids=[signature(r) for r in RECIPES])
def test_recipe(recipe: str, demo: Demo) -> None:
    check = CHECKS.get(signature(recipe))
    if check is None:
        pytest.fail(f"no check for this example of docs/mqtt.md: {signature(recipe)!r}")
    check(demo, lambda: run_recipe(recipe, demo))


# -- what amqtt got wrong, asked of the demo's broker directly -------------------------------


def client(*args: str, demo: Demo) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [args[0], "-h", "127.0.0.1", "-p", str(demo.mqtt_port), *args[1:]],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RECIPE_TIMEOUT_S,
        check=False,
    )


def test_the_demos_broker_is_a_mosquitto_child(demo: Demo) -> None:
    assert re.search(
        rf"embedded broker: mosquitto \(.*\) on 127\.0\.0\.1:{demo.mqtt_port}", demo.log()
    )
    assert "amqtt" not in demo.log()


def test_a_subscriber_gets_its_own_topic_only(demo: Demo) -> None:
    done = client("mosquitto_sub", "-v", "-C", "1", "-t", "chargebus/devices/E1/info", demo=demo)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(" ", 1)[0] == "chargebus/devices/E1/info"
    # Retained messages only, for a while: each status exactly once.
    done = client(
        "mosquitto_sub", "-v", "--retained-only", "-W", "2", "-t", "chargebus/status", demo=demo
    )
    assert done.stdout.splitlines() == ["chargebus/status online"]


def test_qos_0_publishes_all_arrive(demo: Demo) -> None:
    """mosquitto_pub's default: QoS 0, then a disconnect at once."""
    topic = "chargebus/recipes/qos0"
    with MqttObserver("127.0.0.1", demo.mqtt_port, [f"{topic}/#"]) as observer:
        for i in range(6):
            sent = client("mosquitto_pub", "-t", topic, "-m", str(i), demo=demo)
            assert sent.returncode == 0, sent.stderr
        observer.wait_for(topic, lambda m: m.payload == b"5")
        # A probe behind them: whatever was published before it has arrived.
        observer.publish(f"{topic}/probe", b"probe")
        observer.wait_for(f"{topic}/probe")
        assert [m.payload for m in observer.on(topic)] == [str(i).encode() for i in range(6)]
