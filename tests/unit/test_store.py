"""Store: atomic saves, missing files, corrupt files, leftover temp files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.core.models import EvseConfig, Installation, User
from service.store import (
    AdminSecret,
    EnergyCounters,
    Store,
    StoreError,
    UserBook,
    dumps,
    write_atomically,
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "data")
    store.prepare()
    return store


def sample_installation() -> Installation:
    return Installation.model_validate(
        {
            "params": {"title": "home", "max_total_current": 25_000, "cm_vars": {"a": 1.5}},
            "devices": {
                "M1": {"dev_type": "meter_ajax", "dev_id": "M1", "role": 3},
                "E1": {"dev_type": "evse_ajax", "dev_id": "E1", "attach": "M1",
                       "max_charging_cur": "solar"},
            },
        }
    )


def test_prepare_creates_dir(tmp_path: Path) -> None:
    store = Store(tmp_path / "a" / "b")
    store.prepare()
    assert (tmp_path / "a" / "b").is_dir()


def test_missing_files(store: Store) -> None:
    assert store.load(Store.CONFIG, Installation) is None
    assert store.load_admin() is None
    assert store.load_users() == UserBook()
    assert store.load_energy() == EnergyCounters()
    inst = store.load_installation()
    assert inst.devices == {}
    assert inst.params == Installation().params
    assert list(store.data_dir.iterdir()) == []  # loading writes nothing


def test_save_and_load_round_trip(store: Store) -> None:
    inst = sample_installation()
    store.save(Store.CONFIG, inst)
    loaded = store.load_installation()
    assert loaded == inst
    assert loaded.serialno == inst.serialno
    assert isinstance(loaded.devices["E1"], EvseConfig)
    assert list(loaded.devices) == ["M1", "E1"]


def test_users_and_energy_round_trip(store: Store) -> None:
    book = UserBook(users={"u1": User.model_validate({"id": "u1", "rfids": [{"id": "AB"}]})})
    energy = EnergyCounters(soft_meter_wh={"E1": 1234.5})
    store.save(Store.USERS, book)
    store.save(Store.ENERGY, energy)
    assert store.load_users() == book
    assert store.load_energy() == energy


def test_save_replaces_and_leaves_no_temp_file(store: Store) -> None:
    store.save(Store.ENERGY, EnergyCounters(soft_meter_wh={"E1": 1.0}))
    store.save(Store.ENERGY, EnergyCounters(soft_meter_wh={"E1": 2.0}))
    assert store.load_energy().soft_meter_wh == {"E1": 2.0}
    assert sorted(p.name for p in store.data_dir.iterdir()) == [Store.ENERGY]


def test_save_writes_temp_in_same_dir_then_renames(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []
    real_replace = os.replace

    def recording_replace(src: str, dst: str | Path) -> None:
        calls.append((str(src), str(dst)))
        assert Path(src).exists()
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    store.save(Store.CONFIG, sample_installation())
    assert len(calls) == 1
    src, dst = calls[0]
    assert Path(src).parent == store.data_dir
    assert Path(src).name.startswith(".config.json.")
    assert Path(src).name.endswith(".tmp")
    assert Path(dst) == store.path(Store.CONFIG)


def test_failed_save_keeps_old_file_and_removes_temp(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save(Store.ENERGY, EnergyCounters(soft_meter_wh={"E1": 1.0}))
    before = store.path(Store.ENERGY).read_bytes()

    def failing_replace(src: str, dst: str | Path) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk on fire"):
        store.save(Store.ENERGY, EnergyCounters(soft_meter_wh={"E1": 2.0}))
    monkeypatch.undo()
    assert store.path(Store.ENERGY).read_bytes() == before
    assert sorted(p.name for p in store.data_dir.iterdir()) == [Store.ENERGY]


def test_write_atomically_creates_parent(tmp_path: Path) -> None:
    target = tmp_path / "x" / "y.json"
    write_atomically(target, b"{}")
    assert target.read_bytes() == b"{}"


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b"[]",
        b'{"params": {"max_total_current": "a lot"}}',
        b'{"devices": {"E1": {"dev_id": "E1"}}}',
        b'{"unexpected": 1}',
        b"\xff\xfe\x00",
    ],
)
def test_corrupt_file_is_an_error_and_not_overwritten(store: Store, content: bytes) -> None:
    path = store.path(Store.CONFIG)
    path.write_bytes(content)
    with pytest.raises(StoreError) as info:
        store.load_installation()
    message = str(info.value)
    assert str(path) in message
    assert "not overwrite" in message
    assert path.read_bytes() == content


def test_wrong_schema_for_admin(store: Store) -> None:
    store.path(Store.ADMIN).write_text('{"salt_hex": "00"}')
    with pytest.raises(StoreError, match=r"admin\.json"):
        store.load_admin()


def test_unreadable_path_is_store_error(store: Store) -> None:
    store.path(Store.USERS).mkdir()
    with pytest.raises(StoreError, match=r"users\.json"):
        store.load_users()


def test_prepare_removes_leftover_temp_files_only(store: Store) -> None:
    inst = sample_installation()
    store.save(Store.CONFIG, inst)
    leftovers = [store.data_dir / ".config.json.abc123.tmp", store.data_dir / ".users.json.x.tmp"]
    for path in leftovers:
        path.write_text("half a file")
    keep = [store.data_dir / "notes.tmp", store.data_dir / "other.json"]
    for path in keep:
        path.write_text("mine")
    store.prepare()
    assert not any(p.exists() for p in leftovers)
    assert all(p.exists() for p in keep)
    assert store.load_installation() == inst


def test_admin_secret_round_trip(store: Store) -> None:
    secret = AdminSecret(salt_hex="00ff", hash_hex="abcd", n=16384, r=8, p=1)
    store.save(Store.ADMIN, secret)
    assert store.load_admin() == secret


def test_dumps_is_compact_json() -> None:
    assert dumps({"a": [1, 2]}) == b'{"a":[1,2]}'
