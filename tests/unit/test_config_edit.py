"""Applying /cnf edits: set_params, devices/{id}/set, del_device, set_user."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest

from service.app import device_registry
from service.core.config_edit import (
    EditError,
    apply_device_set,
    apply_set_params,
    apply_set_user,
    delete_device,
)
from service.core.dev_info import device_info, get_params_answer, params_info, redact_device
from service.core.device_types import DeviceTypeRegistry
from service.core.models import EvseConfig, EvseState, Installation, MeterConfig, User
from service.core.runtime import DeviceRuntime

USERS = {"u1", "u2"}


@pytest.fixture
def registry() -> DeviceTypeRegistry:
    # The service's registry: the API's own types and the bridges' (evse_powerbrain, …).
    return device_registry()


@pytest.fixture
def inst(registry: DeviceTypeRegistry) -> Installation:
    """An installation with EVSE E1 (attached to meter M1) and meter M1.

    set_params refuses `attach` (not supported); an older configuration that has it still
    loads, and edits keep it."""
    body = {
        "devices": [
            {"dev_type": "meter_ajax", "dev_id": "M1", "name": "grid", "role": 3},
            {"dev_type": "evse_ajax", "dev_id": "E1", "name": "garage"},
        ]
    }
    made = apply_set_params(Installation(), body, registry, USERS).installation
    return Installation.model_validate(
        {**made.model_dump(), "devices": {
            **made.model_dump()["devices"],
            "E1": {**made.devices["E1"].model_dump(), "attach": "M1"},
        }}
    )  # fmt: skip


def refused(
    inst: Installation, body: Any, registry: DeviceTypeRegistry, *fragments: str
) -> str:
    """Applies body expecting EditError; checks the message and that inst did not change."""
    before = inst.model_dump()
    with pytest.raises(EditError) as info:
        apply_set_params(inst, body, registry, USERS)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert inst.model_dump() == before
    return message


# -- params ---------------------------------------------------------------------------------


def test_set_params_top_level_fields(inst: Installation, registry: DeviceTypeRegistry) -> None:
    edit = apply_set_params(inst, {"max_total_current": 40_000}, registry, USERS)
    assert edit.installation.params.max_total_current == 40_000
    assert edit.params_changed is True
    assert edit.changed_devices == []
    assert inst.params.max_total_current == 32_000


def test_set_params_nested_fields(inst: Installation, registry: DeviceTypeRegistry) -> None:
    edit = apply_set_params(
        inst, {"params": {"title": "home", "lb_enabled": False}}, registry, USERS
    )
    assert edit.installation.params.title == "home"
    assert edit.installation.params.lb_enabled is False
    assert edit.installation.params.max_total_current == inst.params.max_total_current


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("max_total_power", "max_total_current"),
        ("power_reserve", "reserve_current"),
        ("overdraft", "overdraft_cur"),
        ("max_total_evse_power", "max_total_evse_current"),
    ],
)
def test_set_params_old_names(
    inst: Installation, registry: DeviceTypeRegistry, old: str, new: str
) -> None:
    top = apply_set_params(inst, {old: 1234}, registry, USERS).installation
    nested = apply_set_params(inst, {"params": {old: 4321}}, registry, USERS).installation
    assert getattr(top.params, new) == 1234
    assert getattr(nested.params, new) == 4321


def test_set_params_same_values_not_changed(
    inst: Installation, registry: DeviceTypeRegistry
) -> None:
    edit = apply_set_params(inst, {"cycle_time": inst.params.cycle_time}, registry, USERS)
    assert edit.params_changed is False
    assert edit.installation == inst


def test_set_params_keeps_serialno(inst: Installation, registry: DeviceTypeRegistry) -> None:
    edit = apply_set_params(inst, {"title": "x"}, registry, USERS)
    assert edit.installation.serialno == inst.serialno


def test_params_info_sent_back_changes_nothing(
    inst: Installation, registry: DeviceTypeRegistry
) -> None:
    info = json.loads(json.dumps(params_info(inst, now=1_700_000_000.0)))
    nested = apply_set_params(inst, {"params": info}, registry, USERS)
    flat = apply_set_params(inst, info, registry, USERS)
    assert nested.installation == inst
    assert flat.installation == inst
    assert nested.params_changed is False


def test_device_infos_sent_back_change_nothing(
    inst: Installation, registry: DeviceTypeRegistry
) -> None:
    runtime = DeviceRuntime()
    runtime.record_state(
        EvseState(ts=1.0, state=3, current=[16_000, 16_000, 16_000], com_err=True), now=1.0
    )
    infos = [
        device_info(device, runtime if isinstance(device, EvseConfig) else DeviceRuntime(),
                    registry, now=5.0)
        for device in inst.devices.values()
    ]
    body = json.loads(json.dumps({"params": params_info(inst, 5.0), "devices": infos}))
    edit = apply_set_params(inst, body, registry, USERS)
    assert edit.installation == inst
    assert edit.changed_devices == []


def test_redacted_device_info_sent_back_keeps_secrets(
    registry: DeviceTypeRegistry,
) -> None:
    inst = apply_set_params(
        Installation(),
        {"devices": [{"dev_type": "evse_ajax", "users": ["u1"], "fixed_rfid": "AB12"}]},
        registry,
        USERS,
    ).installation
    info = redact_device(device_info(inst.devices["E1"], DeviceRuntime(), registry, 0.0))
    edit = apply_set_params(inst, {"devices": [info]}, registry, USERS)
    device = edit.installation.devices["E1"]
    assert isinstance(device, EvseConfig)
    assert device.users == ["u1"]
    assert device.fixed_rfid == "AB12"


def test_whole_get_params_answer_sent_back_changes_nothing(
    inst: Installation, registry: DeviceTypeRegistry
) -> None:
    # get_params: the params flat, both generations' names, dev_meta and the groups.
    answer = get_params_answer(params_info(inst, 5.0), registry.dev_meta(), [])
    edit = apply_set_params(inst, json.loads(json.dumps(answer)), registry, USERS)
    assert edit.installation == inst


def test_whole_get_dev_info_answer_sent_back_changes_nothing(
    inst: Installation, registry: DeviceTypeRegistry
) -> None:
    answer = {
        "params": params_info(inst, 5.0),
        "devices": [device_info(d, DeviceRuntime(), registry, 5.0) for d in inst.devices.values()],
        "auth_cnt": 0,
        "loadmgr_disabled": not inst.params.lb_enabled,
    }
    edit = apply_set_params(inst, json.loads(json.dumps(answer)), registry, USERS)
    assert edit.installation == inst


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ([], ("JSON object",)),
        ("x", ("JSON object",)),
        ({}, ("nothing to set",)),
        ({"params": {}}, ("nothing to set",)),
        ({"bogus": 1, "other": 2}, ("unknown", "bogus", "other")),
        ({"params": {"bogus": 1}}, ("params", "unknown", "bogus")),
        ({"params": [1]}, ("params must be a JSON object",)),
        ({"devices": {"dev_id": "E1"}}, ("devices must be a JSON array",)),
        ({"devices": [5]}, ("devices[0]",)),
        ({"max_total_current": -5}, ("params.max_total_current",)),
        ({"params": {"cycle_time": 10}}, ("params.cycle_time",)),
        ({"max_total_power": 3_000_000}, ("max_total_current",)),
        ({"disable_policy": 7}, ("disable_policy",)),
        ({"lb_enabled": "no"}, ("lb_enabled",)),
    ],
)
def test_set_params_refused(
    inst: Installation, registry: DeviceTypeRegistry, body: Any, fragments: tuple[str, ...]
) -> None:
    refused(inst, body, registry, *fragments)


def test_set_params_readonly_keys_alone_are_nothing(
    inst: Installation, registry: DeviceTypeRegistry
) -> None:
    refused(inst, {"version": "9.9.9", "time": 5}, registry, "nothing to set")


# -- devices --------------------------------------------------------------------------------


def test_new_evse_gets_next_free_id(inst: Installation, registry: DeviceTypeRegistry) -> None:
    edit = apply_set_params(inst, {"devices": [{"dev_type": "evse_ajax"}]}, registry, USERS)
    assert list(edit.installation.devices) == ["M1", "E1", "E2"]
    new = edit.installation.devices["E2"]
    assert isinstance(new, EvseConfig)
    assert new.dev_id == "E2"
    assert new.name == "E2"  # never nameless
    assert edit.changed_devices == ["E2"]
    assert "E2" not in inst.devices


def test_new_meter_gets_meter_id(inst: Installation, registry: DeviceTypeRegistry) -> None:
    edit = apply_set_params(inst, {"devices": [{"dev_type": "meter_http"}]}, registry, USERS)
    assert isinstance(edit.installation.devices["M2"], MeterConfig)


def test_new_ids_fill_gaps(registry: DeviceTypeRegistry) -> None:
    inst = apply_set_params(
        Installation(), {"devices": [{"dev_type": "evse_ajax", "dev_id": "E2"}]}, registry, USERS
    ).installation
    edit = apply_set_params(inst, {"devices": [{"dev_type": "evse_ajax"}] * 2}, registry, USERS)
    assert sorted(edit.installation.devices) == ["E1", "E2", "E3"]


def test_new_evse_takes_min_pause_time_from_params(registry: DeviceTypeRegistry) -> None:
    body = {"min_pause_time": 77, "devices": [{"dev_type": "evse_ajax"}]}
    device = apply_set_params(Installation(), body, registry, USERS).installation.devices["E1"]
    assert isinstance(device, EvseConfig)
    assert device.pause_min_time == 77


def test_device_patch_merges(inst: Installation, registry: DeviceTypeRegistry) -> None:
    edit = apply_set_params(
        inst, {"devices": [{"dev_id": "E1", "max_charging_cur": 20_000}]}, registry, USERS
    )
    device = edit.installation.devices["E1"]
    assert isinstance(device, EvseConfig)
    assert device.max_charging_cur == 20_000
    assert device.name == "garage"
    assert device.attach == "M1"
    assert device.dev_type == "evse_ajax"
    assert edit.changed_devices == ["E1"]
    assert edit.params_changed is False
    original = inst.devices["E1"]
    assert isinstance(original, EvseConfig)
    assert original.max_charging_cur == 16_000


def test_device_patch_same_values_not_changed(
    inst: Installation, registry: DeviceTypeRegistry
) -> None:
    edit = apply_set_params(inst, {"devices": [{"dev_id": "E1", "name": "garage"}]}, registry,
                            USERS)
    assert edit.changed_devices == []


def test_device_enabled_as_int(inst: Installation, registry: DeviceTypeRegistry) -> None:
    edit = apply_set_params(inst, {"devices": [{"dev_id": "E1", "device_enabled": 0}]},
                            registry, USERS)
    assert edit.installation.devices["E1"].device_enabled is False


def test_device_readonly_keys_ignored(inst: Installation, registry: DeviceTypeRegistry) -> None:
    patch = {"dev_id": "E1", "state": 3, "power_w": 999, "com_errors": 5, "is_evse": True,
             "dev_type_name": "whatever", "evse": {"cp_state": "x"}, "prio": 4}
    edit = apply_set_params(inst, {"devices": [patch]}, registry, USERS)
    device = edit.installation.devices["E1"]
    assert isinstance(device, EvseConfig)
    assert device.prio == 4
    assert "state" not in device.model_dump()


def test_device_type_can_change_within_kind(
    inst: Installation, registry: DeviceTypeRegistry
) -> None:
    edit = apply_set_params(
        inst, {"devices": [{"dev_id": "E1", "dev_type": "evse_powerbrain"}]}, registry, USERS
    )
    assert edit.installation.devices["E1"].dev_type == "evse_powerbrain"


@pytest.mark.parametrize(
    ("devices", "fragments"),
    [
        ([{"name": "x"}], ("devices[0].dev_type", "required")),
        ([{"dev_id": "E9"}], ("devices[0].dev_type", "required")),
        ([{"dev_type": "evse_nonesuch"}], ("devices[0].dev_type", "evse_nonesuch")),
        ([{"dev_type": "evse_ajax", "dev_id": "M5"}], ("devices[0].dev_id", "begin with E")),
        ([{"dev_type": "meter_ajax", "dev_id": "E5"}], ("devices[0].dev_id", "begin with M")),
        ([{"dev_id": "E1", "dev_type": "meter_ajax"}], ("begin with M",)),
        ([{"dev_type": "evse_ajax", "dev_id": 5}], ("devices[0].dev_id", "string")),
        ([{"dev_type": "evse_ajax", "dev_id": "E 1"}], ("devices[0].dev_id",)),
        ([{"dev_id": "E1", "bogus_key": 1}], ("devices[0].bogus_key",)),
        ([{"dev_id": "E1", "max_charging_cur": 90_000}], ("devices[0].max_charging_cur",)),
        ([{"dev_id": "E1", "min_charging_cur": -1}], ("devices[0].min_charging_cur",)),
        ([{"dev_id": "M1", "role": 9}], ("devices[0].role",)),
        ([{"dev_id": "M1", "label": "x"}], ("devices[0].label",)),
        ([{"dev_id": "E1", "users": ["u1", "nobody"]}], ("devices[0].users", "nobody")),
        ([{"dev_id": "E1", "attach": "M9"}], ("devices[0].attach", "M9", "not supported")),
        ([{"dev_type": "evse_ajax", "attach": "M1"}], ("devices[0].attach", "M1", "not supported")),
        ([{"dev_id": "M1", "role": 4}], ("devices[0].role", "vehicle consumption")),
        ([{"dev_type": "meter_ajax", "role": 5}], ("devices[0].role", "storage")),
        ([{"dev_id": "E1", "soft_meter": -1}], ("devices[0].soft_meter",)),
        ([{"dev_id": "E1", "soft_meter": "12"}], ("devices[0].soft_meter",)),
        ([{"dev_id": "E1", "soft_meter": True}], ("devices[0].soft_meter",)),
        ([{"dev_id": "M1", "soft_meter": 5}], ("devices[0].soft_meter", "only EVSEs")),
        ([{"dev_id": "E1", "name": "ok"}, {"dev_id": "E1", "prio": -1}],
         ("devices[1].prio",)),
    ],
)
def test_device_edit_refused(
    inst: Installation,
    registry: DeviceTypeRegistry,
    devices: list[Any],
    fragments: tuple[str, ...],
) -> None:
    refused(inst, {"devices": devices}, registry, *fragments)


def test_all_or_nothing_with_params_and_devices(
    inst: Installation, registry: DeviceTypeRegistry
) -> None:
    body = {
        "max_total_current": 10_000,
        "devices": [{"dev_type": "evse_ajax"}, {"dev_id": "M1", "role": 99}],
    }
    snapshot = copy.deepcopy(inst)
    refused(inst, body, registry, "devices[1].role")
    assert inst == snapshot
    assert "E2" not in inst.devices


def test_users_must_be_known(inst: Installation, registry: DeviceTypeRegistry) -> None:
    edit = apply_set_params(inst, {"devices": [{"dev_id": "E1", "users": ["u2"]}]}, registry,
                            USERS)
    device = edit.installation.devices["E1"]
    assert isinstance(device, EvseConfig)
    assert device.users == ["u2"]


def test_roles_in_use_and_an_empty_attach_are_accepted(
    inst: Installation, registry: DeviceTypeRegistry
) -> None:
    # What clients send today keeps working: roles 0-3, attach "" (a get_dev_info echo).
    for role in (0, 1, 2, 3):
        edit = apply_set_params(
            inst, {"devices": [{"dev_id": "M1", "role": role, "attach": ""}]}, registry, USERS
        )
        device = edit.installation.devices["M1"]
        assert isinstance(device, MeterConfig) and device.role == role


def test_soft_meter_collected(inst: Installation, registry: DeviceTypeRegistry) -> None:
    edit = apply_set_params(
        inst,
        {"devices": [{"dev_id": "E1", "soft_meter": 1234}, {"dev_type": "evse_ajax",
                                                            "soft_meter": 5.5}]},
        registry,
        USERS,
    )
    assert edit.soft_meters == {"E1": 1234.0, "E2": 5.5}
    assert "soft_meter" not in edit.installation.devices["E1"].model_dump()
    # The soft meter alone does not change the configuration.
    assert "E1" not in edit.changed_devices


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_soft_meter_refuses_non_finite(
    inst: Installation, registry: DeviceTypeRegistry, value: float
) -> None:
    refused(inst, {"devices": [{"dev_id": "E1", "soft_meter": value}]}, registry,
            "soft_meter")


def test_set_params_refuses_non_finite_cm_var(
    inst: Installation, registry: DeviceTypeRegistry
) -> None:
    refused(inst, json.loads('{"cm_vars": {"x": NaN}}'), registry, "cm_vars")


# -- devices/{id}/set -----------------------------------------------------------------------


def test_apply_device_set(inst: Installation, registry: DeviceTypeRegistry) -> None:
    edit = apply_device_set(inst, "E1", {"prio": 7, "dev_id": "E99"}, registry, USERS)
    device = edit.installation.devices["E1"]
    assert isinstance(device, EvseConfig)
    assert device.prio == 7
    assert "E99" not in edit.installation.devices
    assert edit.changed_devices == ["E1"]


def test_apply_device_set_unknown_device(
    inst: Installation, registry: DeviceTypeRegistry
) -> None:
    with pytest.raises(EditError, match="E9"):
        apply_device_set(inst, "E9", {"prio": 7}, registry, USERS)


def test_apply_device_set_refuses_non_object(
    inst: Installation, registry: DeviceTypeRegistry
) -> None:
    with pytest.raises(EditError, match="JSON object"):
        apply_device_set(inst, "E1", [1], registry, USERS)


def test_apply_device_set_refuses_bad_value(
    inst: Installation, registry: DeviceTypeRegistry
) -> None:
    before = inst.model_dump()
    with pytest.raises(EditError, match="prio"):
        apply_device_set(inst, "E1", {"prio": "high"}, registry, USERS)
    assert inst.model_dump() == before


# -- del_device -----------------------------------------------------------------------------


def test_delete_device(inst: Installation) -> None:
    after = delete_device(inst, "E1")
    assert list(after.devices) == ["M1"]
    assert list(inst.devices) == ["M1", "E1"]


def test_delete_meter_detaches_evses(inst: Installation) -> None:
    after = delete_device(inst, "M1")
    assert list(after.devices) == ["E1"]
    assert after.devices["E1"].attach == ""
    assert inst.devices["E1"].attach == "M1"


def test_delete_unknown_device(inst: Installation) -> None:
    with pytest.raises(EditError, match="E7"):
        delete_device(inst, "E7")


# -- set_user -------------------------------------------------------------------------------


@pytest.fixture
def users() -> dict[str, User]:
    return {
        "u1": User.model_validate(
            {"id": "u1", "name": "Ann", "dev_ids": ["E1"], "rfids": [{"id": "AAAA"}]}
        ),
        "u2": User.model_validate({"id": "u2", "name": "Bob", "rfids": [{"id": "BBBB"}]}),
    }


def test_admin_creates_user_with_new_id(users: dict[str, User]) -> None:
    result, user_id = apply_set_user(users, {"name": "Cid"}, is_admin=True, new_id="u3")
    assert user_id == "u3"
    assert result["u3"].name == "Cid"
    assert set(result) == {"u1", "u2", "u3"}
    assert "u3" not in users


def test_admin_creates_user_with_given_id(users: dict[str, User]) -> None:
    result, user_id = apply_set_user(users, {"id": "dana"}, is_admin=True, new_id="u3")
    assert user_id == "dana"
    assert "dana" in result
    assert "u3" not in result


def test_non_admin_cannot_create(users: dict[str, User]) -> None:
    with pytest.raises(PermissionError):
        apply_set_user(users, {"name": "Eve"}, is_admin=False, new_id="u3")
    with pytest.raises(PermissionError):
        apply_set_user(users, {"id": "u9", "name": "Eve"}, is_admin=False, new_id="u3")


def test_non_admin_updates_existing_user_merging(users: dict[str, User]) -> None:
    result, user_id = apply_set_user(
        users, {"id": "u1", "name": "Anna"}, is_admin=False, new_id="x"
    )
    assert user_id == "u1"
    assert result["u1"].name == "Anna"
    assert result["u1"].dev_ids == ["E1"]
    assert [r.id for r in result["u1"].rfids] == ["AAAA"]
    assert users["u1"].name == "Ann"


def test_non_admin_cannot_change_dev_ids(users: dict[str, User]) -> None:
    with pytest.raises(PermissionError):
        apply_set_user(users, {"id": "u1", "dev_ids": ["E1", "E2"]}, is_admin=False, new_id="x")
    # Sending back the same dev_ids is fine.
    result, _ = apply_set_user(users, {"id": "u1", "dev_ids": ["E1"]}, is_admin=False,
                               new_id="x")
    assert result["u1"].dev_ids == ["E1"]


def test_admin_changes_dev_ids(users: dict[str, User]) -> None:
    result, _ = apply_set_user(users, {"id": "u1", "dev_ids": []}, is_admin=True, new_id="x")
    assert result["u1"].dev_ids == []


def test_rfid_of_another_user_refused(users: dict[str, User]) -> None:
    before = {k: v.model_dump() for k, v in users.items()}
    with pytest.raises(EditError, match="BBBB"):
        apply_set_user(users, {"id": "u1", "rfids": [{"id": "BBBB"}]}, is_admin=True,
                       new_id="x")
    with pytest.raises(EditError, match="AAAA"):
        apply_set_user(users, {"rfids": [{"id": "AAAA"}]}, is_admin=True, new_id="u3")
    assert {k: v.model_dump() for k, v in users.items()} == before


def test_rfid_listed_twice_refused(users: dict[str, User]) -> None:
    with pytest.raises(EditError, match="twice"):
        apply_set_user(users, {"id": "u2", "rfids": [{"id": "CC"}, {"id": "CC"}]},
                       is_admin=True, new_id="x")


def test_user_keeps_own_rfid(users: dict[str, User]) -> None:
    result, _ = apply_set_user(users, {"id": "u1", "rfids": [{"id": "AAAA"}, {"id": "DD"}]},
                               is_admin=True, new_id="x")
    assert [r.id for r in result["u1"].rfids] == ["AAAA", "DD"]


def test_only_the_admin_changes_rfids(users: dict[str, User]) -> None:
    # A user id is no credential for PINs (issue 13, item 1).
    with pytest.raises(PermissionError, match="rfids"):
        apply_set_user(users, {"id": "u1", "rfids": [{"id": "AAAA"}, {"id": "DD"}]},
                       is_admin=False, new_id="x")
    unchanged, _ = apply_set_user(users, {"id": "u1", "name": "n", "rfids": [{"id": "AAAA"}]},
                                  is_admin=False, new_id="x")
    assert unchanged["u1"].name == "n"


def test_rfid_uniqueness_ignores_letter_case(users: dict[str, User]) -> None:
    with pytest.raises(EditError, match="another user"):
        apply_set_user(users, {"id": "u2", "rfids": [{"id": "aaaa"}]}, is_admin=True,
                       new_id="x")
    with pytest.raises(EditError, match="twice"):
        apply_set_user(users, {"id": "u2", "rfids": [{"id": "Cc"}, {"id": "cC"}]},
                       is_admin=True, new_id="x")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([], "JSON user object"),
        ({"id": 5}, "id"),
        ({"id": "u1", "bogus": 1}, "user.bogus"),
        ({"id": "u1", "rfids": [{"id": ""}]}, "user.rfids"),
        ({"id": "bad id"}, "user.id"),
    ],
)
def test_set_user_refused(users: dict[str, User], body: Any, fragment: str) -> None:
    with pytest.raises(EditError) as info:
        apply_set_user(users, body, is_admin=True, new_id="x")
    assert fragment in str(info.value)


# -- groups ---------------------------------------------------------------------------------


def test_set_params_sets_the_group_tree(inst: Installation, registry: DeviceTypeRegistry) -> None:
    body = {
        "groups": [
            {"id": 1, "name": "garage", "max_current": 32_000},
            {"id": 2, "name": "row A", "parent": 1, "max_current": 20_000},
        ],
        "devices": [{"dev_id": "E1", "group": 2}],
    }
    edit = apply_set_params(inst, body, registry, USERS)
    assert [(g.id, g.parent, g.max_current) for g in edit.installation.groups] == [
        (1, 0, 32_000),
        (2, 1, 20_000),
    ]
    assert edit.params_changed
    assert edit.installation.devices["E1"].group == 2
    # [] removes them all, once no device is left in one.
    cleared = apply_set_params(
        edit.installation, {"groups": [], "devices": [{"dev_id": "E1", "group": 0}]},
        registry, USERS,
    )  # fmt: skip
    assert cleared.installation.groups == []


@pytest.mark.parametrize(
    ("groups", "fragment"),
    [
        ({"id": 1}, "JSON array"),
        ([{"id": 1, "max_current": 10_000}, {"id": 1, "max_current": 5000}], "given twice"),
        ([{"id": 1, "parent": 7, "max_current": 10_000}], "parent group 7 does not exist"),
        (
            [{"id": 1, "parent": 2, "max_current": 1}, {"id": 2, "parent": 1, "max_current": 1}],
            "own ancestor",
        ),
        ([{"id": 0, "max_current": 10_000}], "groups[0].id"),
        ([{"id": 1, "max_current": -5}], "groups[0].max_current"),
        ([{"id": 1, "max_current": 1000, "fuse": 3}], "groups[0]"),
    ],
)
def test_bad_groups_are_refused(
    inst: Installation, registry: DeviceTypeRegistry, groups: Any, fragment: str
) -> None:
    refused(inst, {"groups": groups}, registry, fragment)


def test_a_device_in_a_missing_group_is_refused(
    inst: Installation, registry: DeviceTypeRegistry
) -> None:
    refused(inst, {"devices": [{"dev_id": "E1", "group": 9}]}, registry, "E1")
    with_group = apply_set_params(
        inst, {"groups": [{"id": 9, "max_current": 16_000}]}, registry, USERS
    ).installation
    moved = apply_set_params(
        with_group, {"devices": [{"dev_id": "E1", "group": 9}]}, registry, USERS
    )
    refused(moved.installation, {"groups": []}, registry, "E1")


# -- MQTT devices/{id}/set: operational fields only (issue 13, item 7) ------------------------


@pytest.mark.parametrize(
    "patch",
    [
        {"dev_type": "evse_powerbrain", "address": "10.0.0.9:502"},
        {"address": "10.0.0.9:502"},
        {"users": []},
        {"fixed_rfid": "AB"},
        {"group": 3},
        {"failsafe_current": 32000},
        {"max_charging_cur": 10000, "id": 7},  # one refused field refuses the whole set
    ],
)
def test_mqtt_set_refuses_all_but_operational_fields(
    inst: Installation, registry: DeviceTypeRegistry, patch: dict[str, Any]
) -> None:
    with pytest.raises(EditError, match="may not be changed over MQTT"):
        apply_device_set(inst, "E1", patch, registry, USERS)


def test_mqtt_set_takes_operational_fields(
    inst: Installation, registry: DeviceTypeRegistry
) -> None:
    patch = {"dev_id": "E9", "max_charging_cur": 10000, "min_charging_cur": 7000, "prio": 2,
             "device_enabled": False, "name": "Carport", "charging_rules": []}
    edit = apply_device_set(inst, "E1", patch, registry, USERS)
    device = edit.installation.devices["E1"]
    assert isinstance(device, EvseConfig)
    assert (device.max_charging_cur, device.prio, device.device_enabled) == (10000, 2, False)
    with pytest.raises(EditError, match="may not be changed over MQTT"):
        apply_device_set(inst, "M1", {"role": 1}, registry, USERS)
    assert apply_device_set(inst, "M1", {"name": "Grid"}, registry, USERS).changed_devices == [
        "M1"]
