"""get_params as real installations answer it (issue 17): the one installable Python client
of this API, `powerbrain` 0.1.0 from PyPI, runs unchanged against the service, and the
answer has the keys and JSON types of firmware 1.14.0's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.app import RunningService, running_service
from service.core.models import Installation
from service.settings import Settings
from service.store import Store
from tests.integration.conftest import Api

pytestmark = pytest.mark.integration

# A configuration as one migrated from the product keeps it: the wallbox E1 with the meter in
# its supply line attached (`attach`; set_params refuses new ones, docs/api.md).
DEVICES: dict[str, dict[str, Any]] = {
    "E1": {"dev_type": "evse_ajax", "dev_id": "E1", "name": "Carport", "attach": "M2"},
    "E2": {"dev_type": "evse_powerbrain", "dev_id": "E2", "name": "Garage",
           "address": "127.0.0.1:1"},
    "M1": {"dev_type": "meter_ajax", "dev_id": "M1", "name": "Grid", "role": 3},
    "M2": {"dev_type": "meter_ajax", "dev_id": "M2", "name": "Carport meter", "role": 0},
}  # fmt: skip

# The get_params answer of firmware 1.14.0 as the library's test data records it, with the
# fields issue 17 lists (values as recorded; only their JSON types matter here).
FIRMWARE_1_14: dict[str, Any] = {
    "title": "Title",
    "desc": "Ladestation Carport",
    "max_total_power": 11000,
    "power_reserve": 0,
    "overdraft": 0,
    "max_total_evse_power": 11000,
    "consumed_evse_power": 0,
    "remaining_evse_power": 11000,
    "lb_enabled": True,
    "disable_policy": 1,
    "max_imbalance": 4600,
    "min_pause_time": 300,
    "ocpp_srv_tls_mode": "off",
    "ocpp_srv_port": 19520,
    "ocpp_srv_use_ext_cert": False,
    "ocpp_srv_cert_fn": "",
    "ocpp_srv_private_key_fn": "",
    "ocpp_srv_cacert_fn": [],
    "cycle_time": 3009,
    "max_evses": 3,
    "shareware_mode": False,
    "version": "1.14.0",
    "time": 1664806025,
    "vsn": {"vendorid": 52997, "version": 17696120, "productid": 1, "serialno": "SERIAL"},
    "ocpp_gateway_license_cnt": 0,
    "ocpp_gateway_licenses_used": 0,
}
# The newer firmware's names of the same six values (the spec's).
NEW_NAMES = {
    "max_total_power": "max_total_current",
    "power_reserve": "reserve_current",
    "overdraft": "overdraft_cur",
    "max_total_evse_power": "max_total_evse_current",
    "consumed_evse_power": "cons_evse_power",
    "remaining_evse_power": "avail_evse_power",
}


@pytest.fixture
async def migrated(settings: Settings) -> AsyncIterator[RunningService]:
    store = Store(settings.data_dir)
    store.prepare()
    store.save(
        Store.CONFIG,
        Installation.model_validate(
            {"params": {"max_total_current": 25_000, "max_total_evse_current": 22_000},
             "devices": DEVICES}
        ),
    )  # fmt: skip
    async with running_service(settings) as running:
        await running.bus.wait_connected(10)
        yield running


def json_type(value: Any) -> str:
    # bool before int: True is an int to Python, not to JSON.
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                       (list, "array"), (dict, "object")):  # fmt: skip
        if isinstance(value, kind):
            return name
    return "null"


async def test_the_powerbrain_library_connects_and_reads_the_devices(
    migrated: RunningService,
) -> None:
    powerbrain = pytest.importorskip("powerbrain", reason="pip install -e '.[dev]'")
    brain = powerbrain.Powerbrain(f"http://127.0.0.1:{migrated.http_port}")
    # A blocking client (requests): in a thread, so that the service keeps serving.
    await asyncio.to_thread(brain.connect)
    assert brain.version == "1.25.0"
    assert brain.max_total_evse_power == 22_000
    assert brain.device_names == migrated.state.registry.dev_meta()
    info = await asyncio.to_thread(brain.get_dev_info)
    devices = info["devices"]
    assert sorted(devices) == ["E1", "E2", "M1", "M2"]
    assert devices["E1"]["dev_type_label"] == "HTTP input"
    assert devices["E2"]["dev_type_label"] == "cFos Power Brain"
    # The attach link resolved to the attached meter's own entry; none where there is none.
    assert devices["E1"]["attach"] == "M2"
    assert devices["E1"]["attached_device"] is devices["M2"]
    assert devices["E2"]["attach"] is None and devices["E2"]["attached_device"] is None
    assert info["params"]["title"] == migrated.state.installation.params.title
    assert info["loadmgr_disabled"] is False


async def test_get_params_has_the_keys_and_types_of_firmware_1_14(api: Api) -> None:
    status, answer = await api.get(cmd="get_params")
    assert status == 200
    missing = sorted(set(FIRMWARE_1_14) - set(answer))
    assert missing == []
    wrong = {
        key: (json_type(answer[key]), json_type(recorded))
        for key, recorded in FIRMWARE_1_14.items()
        if json_type(answer[key]) != json_type(recorded)
    }
    assert wrong == {}
    assert {k: json_type(v) for k, v in answer["vsn"].items()} == {
        k: json_type(v) for k, v in FIRMWARE_1_14["vsn"].items()
    }
    # Flat: no device list, no nested params; both generations' names with one value.
    assert "devices" not in answer and "params" not in answer
    for old, new in NEW_NAMES.items():
        assert answer[old] == answer[new], old
    # dev_meta as firmware 1.6 answers it; chargebus's group tree under a name of its own.
    assert answer["dev_meta"]["evse_ajax"] == "HTTP input"
    assert answer["groups"] == []


async def test_a_get_params_answer_sent_back_changes_nothing(api: Api) -> None:
    garage = {"id": 1, "name": "Garage", "max_current": 16_000}
    await api.set_params({"max_total_current": 20_000, "groups": [garage]})
    _, before = await api.get(cmd="get_params")
    await api.set_params(before)
    _, after = await api.get(cmd="get_params")
    for key in ("time", "cons_evse_power", "avail_evse_power", "consumed_evse_power",
                "remaining_evse_power"):  # fmt: skip
        before.pop(key), after.pop(key)
    assert after == before
    # An old client edits the old name only: refused with a clear 400, nothing changed.
    status, answer = await api.post({**before, "max_total_power": 30_000}, api.admin,
                                    cmd="set_params")  # fmt: skip
    assert status == 400 and "max_total_power" in answer["error"]
