"""The docs say what the code does (issue 14 item 12): the metrics table names every metric
family the service exposes, and docs/mqtt.md grants the bridge login what mosquitto/acl
grants it."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from service.bus import BusStats
from service.control_loop import LoopStats
from service.core.dev_info import get_params_answer, params_info
from service.core.models import Installation
from service.metrics import Metrics
from tests.unit.test_metrics import make_state

ROOT = Path(__file__).resolve().parents[2]
API = (ROOT / "docs" / "api.md").read_text()
MQTT = (ROOT / "docs" / "mqtt.md").read_text()
ACL = (ROOT / "mosquitto" / "acl").read_text()


def _metrics_table() -> str:
    start = API.index("### /metrics")
    end = API.index("### ", start + 1)
    return API[start:end]


def test_every_exposed_metric_family_is_in_the_metrics_table(tmp_path: Path) -> None:
    metrics = Metrics(make_state(tmp_path), modbus_errors=lambda: {"E1": 2})
    metrics.sources.bus = BusStats()
    metrics.sources.loop = LoopStats()
    metrics.observe_run(0.001)
    metrics.count_request("get_dev_info", 200)
    body, _ = metrics.render()
    names = {
        family.name
        for family in text_string_to_metric_families(body.decode())
        # prometheus_client's creation timestamps of counters and histograms
        if not family.name.endswith("_created")
    }
    assert "chargebus_modbus_errors" in names
    table = _metrics_table()
    # The table writes counters with their _total suffix, and groups some names as
    # `a` / `_b` / `_c` after a common prefix.
    documented = set(re.findall(r"`(chargebus_[a-z_]+)`", table))
    grouped = r"`(chargebus_[a-z_]+?)_[a-z]+(?:_total)?`((?: / `_[a-z_]+`)+)"
    for prefix, rest in re.findall(grouped, table):
        documented |= {prefix + suffix for suffix in re.findall(r"`(_[a-z_]+)`", rest)}
    documented |= {name.removesuffix("_total") for name in documented}
    missing = sorted(n for n in names if n not in documented)
    assert missing == [], f"metric families exposed but not in docs/api.md: {missing}"


def _acl_block(user: str) -> list[str]:
    lines: list[str] = []
    inside = False
    for line in ACL.splitlines():
        if line.startswith("user "):
            inside = line.split()[1] == user
            continue
        if inside and line.startswith("topic "):
            lines.append(line)
    return lines


def test_what_the_acl_lets_the_modbus_bridge_read_mqtt_md_says_it_reads() -> None:
    reads = [
        line.split()[-1] for line in _acl_block("bridge-modbus") if line.split()[1] == "read"
    ]
    assert "chargebus/params" in reads
    for topic in reads:
        # mqtt.md writes topics as `{base}/params` or `devices/+/config`, and the bridge's
        # own name as {name}.
        name = topic.removeprefix("chargebus/").replace("/modbus/", "/{name}/")
        assert f"{{base}}/{name}" in MQTT or f"`{name}`" in MQTT, topic
    # Nothing in mqtt.md may claim the opposite.
    assert not re.search(r"may not read `\{base\}/params`", MQTT)


def test_every_key_of_get_params_is_in_its_section() -> None:
    """`groups` and the rest (issue 14 item 12, issue 17): docs/api.md names each key."""
    answer = get_params_answer(params_info(Installation(), 0.0), {}, [])
    start = API.index("### get_params")
    section = API[start : API.index("### ", start + 1)]
    missing = sorted(
        key for key in answer if f"`{key}`" not in section and f'"{key}"' not in section
    )
    assert missing == []
