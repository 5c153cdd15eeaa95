"""Who may do what: admin by HTTP basic auth, a user by the user's own id."""

from __future__ import annotations

from typing import Any

import pytest

from service.app import RunningService
from tests.integration.conftest import ADMIN_PASSWORD, Api, basic_auth

pytestmark = pytest.mark.integration

ADMIN_GETS: list[dict[str, Any]] = [
    {"cmd": "get_users"},
    {"cmd": "del_device", "dev_id": "E1"},
    {"cmd": "reset_device", "dev_id": "E1"},
    {"cmd": "accept_license", "acc": 1},
    {"cmd": "set_diag_logging", "enable": 1},
    {"cmd": "soft_meter", "dev_id": "E1", "val": 5},
    {"cmd": "set_cm_vars", "name": "x", "val": 1},
    {"cmd": "del_user", "id": "1001"},
]
OPEN_GETS: list[dict[str, Any]] = [
    {"cmd": "get_dev_info"},
    {"cmd": "get_params"},
    {"cmd": "get_new_user_id"},
    {"cmd": "soft_meter", "dev_id": "E1"},
]


@pytest.fixture
async def configured(api: Api) -> Api:
    await api.set_params({"devices": [{"dev_type": "evse_ajax", "dev_id": "E1", "users": []}]})
    status, _ = await api.post(
        {"id": "1001", "name": "u", "dev_ids": ["E1"]}, api.admin, cmd="set_user"
    )
    assert status == 200
    return api


@pytest.mark.parametrize("params", ADMIN_GETS)
async def test_admin_commands_refuse_anonymous(
    configured: Api, service: RunningService, params: dict[str, Any]
) -> None:
    before = service.state.installation.model_dump_json(), service.state.users.model_dump_json()
    status, answer = await configured.get(**params)
    assert status == 401 and "admin" in answer["error"]
    assert (
        service.state.installation.model_dump_json(),
        service.state.users.model_dump_json(),
    ) == before


@pytest.mark.parametrize("params", ADMIN_GETS)
async def test_admin_commands_refuse_wrong_password(
    configured: Api, service: RunningService, params: dict[str, Any]
) -> None:
    before = service.state.installation.model_dump_json(), service.state.users.model_dump_json()
    status, answer = await configured.get(basic_auth("admin", "guess"), **params)
    assert status == 401 and "wrong" in answer["error"]
    assert (
        service.state.installation.model_dump_json(),
        service.state.users.model_dump_json(),
    ) == before


@pytest.mark.parametrize("params", OPEN_GETS)
async def test_read_only_commands_are_open(configured: Api, params: dict[str, Any]) -> None:
    status, _ = await configured.get(**params)
    assert status == 200


async def test_set_params_needs_admin(configured: Api, service: RunningService) -> None:
    status, answer = await configured.post({"title": "x"}, cmd="set_params")
    assert status == 401 and "WWW-Authenticate" not in answer
    status, _ = await configured.post(
        {"title": "x"}, basic_auth("root", ADMIN_PASSWORD), cmd="set_params"
    )
    assert status == 401
    assert service.state.installation.params.title != "x"


async def test_set_user_with_own_id_but_not_dev_ids(
    configured: Api, service: RunningService
) -> None:
    status, _ = await configured.post({"id": "1001", "name": "me"}, cmd="set_user")
    assert status == 200
    assert service.state.users.users["1001"].name == "me"
    status, answer = await configured.post({"id": "1001", "dev_ids": ["E1", "E2"]}, cmd="set_user")
    assert status == 401 and "dev_ids" in answer["error"]
    assert service.state.users.users["1001"].dev_ids == ["E1"]


async def test_creating_a_user_needs_admin(configured: Api, service: RunningService) -> None:
    status, answer = await configured.post({"id": "2002", "name": "new"}, cmd="set_user")
    assert status == 401 and "admin" in answer["error"]
    status, _ = await configured.post({"name": "no id"}, cmd="set_user")
    assert status == 401
    assert set(service.state.users.users) == {"1001"}


async def test_user_records_and_device_users_are_not_shown_anonymously(
    configured: Api,
) -> None:
    await configured.set_params({"devices": [{"dev_id": "E1", "users": ["1001"]}]})
    status, info = await configured.get(cmd="get_dev_info")
    assert status == 200 and "users" not in info["devices"][0]
    status, info = await configured.get(configured.admin, cmd="get_dev_info")
    assert info["devices"][0]["users"] == ["1001"]
    status, answer = await configured.get(cmd="get_user", id="9999")
    assert status == 403 and "admin" in answer["error"]


async def test_a_few_failed_logins_do_not_lock_out_the_admin(configured: Api) -> None:
    # Within the address's burst (service.core.throttle): refused as wrong, not throttled.
    # tests/integration/test_security.py measures the rates under attack.
    wrong = basic_auth("admin", "nope")
    for _ in range(3):
        status, _ = await configured.get(wrong, cmd="get_users")
        assert status == 401
    status, _ = await configured.get(configured.admin, cmd="get_users")
    assert status == 200


async def test_admin_password_is_stored_only_as_a_hash(service: RunningService) -> None:
    stored = (service.settings.data_dir / "admin.json").read_text()
    assert ADMIN_PASSWORD not in stored
    assert "hash_hex" in stored and "salt_hex" in stored
