"""Admin password hashing, the verified cache and the admin account (the guess throttle:
tests/unit/test_throttle.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.auth import (
    AdminAccount,
    VerifiedCache,
    hash_password,
    verify_password,
)
from service.store import Store

# -- hashing --------------------------------------------------------------------------------


def test_hash_verify_round_trip() -> None:
    secret = hash_password("correct horse")
    assert verify_password(secret, "correct horse") is True
    assert verify_password(secret, "correct horsE") is False
    assert verify_password(secret, "") is False


def test_salts_differ() -> None:
    a, b = hash_password("same"), hash_password("same")
    assert a.salt_hex != b.salt_hex
    assert a.hash_hex != b.hash_hex
    assert len(bytes.fromhex(a.salt_hex)) >= 16
    assert verify_password(a, "same") and verify_password(b, "same")


def test_hash_does_not_contain_password() -> None:
    secret = hash_password("plaintextpw")
    assert "plaintextpw" not in secret.model_dump_json()


def test_non_ascii_password() -> None:
    secret = hash_password("pässwörd€")
    assert verify_password(secret, "pässwörd€")
    assert not verify_password(secret, "passwörd€")


# -- verified cache -------------------------------------------------------------------------


def test_verified_cache() -> None:
    cache = VerifiedCache()
    assert cache.matches("pw") is False
    cache.remember("pw")
    assert cache.matches("pw") is True
    assert cache.matches("pw2") is False
    cache.remember("pw2")
    assert cache.matches("pw") is False
    cache.forget()
    assert cache.matches("pw2") is False


# -- admin account --------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path)
    store.prepare()
    return store


async def test_configured_password_works_and_only_hash_stored(store: Store) -> None:
    account = AdminAccount.load_or_create(store, "s3cret-admin")
    assert await account.check("s3cret-admin") is True
    assert await account.check("wrong") is False
    text = store.path(Store.ADMIN).read_text()
    assert "s3cret-admin" not in text
    assert set(json.loads(text)) == {"salt_hex", "hash_hex", "n", "r", "p"}


async def test_stored_hash_wins_over_later_configured_password(store: Store) -> None:
    AdminAccount.load_or_create(store, "first-pw")
    stored = store.path(Store.ADMIN).read_bytes()
    account = AdminAccount.load_or_create(store, "second-pw")
    assert await account.check("first-pw") is True
    assert await account.check("second-pw") is False
    assert store.path(Store.ADMIN).read_bytes() == stored


async def test_generated_password_when_none_configured(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="service.auth"):
        account = AdminAccount.load_or_create(store, None)
    assert store.load_admin() is not None
    messages = [r.getMessage() for r in caplog.records if "generated" in r.getMessage()]
    assert len(messages) == 1
    password = messages[0].split("password: ")[1].split(" ")[0]
    assert await account.check(password) is True
    assert password not in store.path(Store.ADMIN).read_text()


async def test_check_repeated_uses_cache_consistently(store: Store) -> None:
    account = AdminAccount.load_or_create(store, "abcd")
    for _ in range(3):
        assert await account.check("abcd") is True
        assert await account.check("abcde") is False


async def test_change_password(store: Store) -> None:
    account = AdminAccount.load_or_create(store, "old-pw")
    assert await account.check("old-pw") is True  # now cached
    await account.change("new-pw")
    assert await account.check("new-pw") is True
    assert await account.check("old-pw") is False
    assert "new-pw" not in store.path(Store.ADMIN).read_text()
    reloaded = AdminAccount.load_or_create(store, "old-pw")
    assert await reloaded.check("new-pw") is True
    assert await reloaded.check("old-pw") is False


@pytest.mark.parametrize("short", ["", "a", "abc"])
async def test_change_refuses_short_password(store: Store, short: str) -> None:
    account = AdminAccount.load_or_create(store, "old-pw")
    before = store.path(Store.ADMIN).read_bytes()
    with pytest.raises(ValueError, match="4"):
        await account.change(short)
    assert await account.check("old-pw") is True
    assert store.path(Store.ADMIN).read_bytes() == before


async def test_change_accepts_four_characters(store: Store) -> None:
    account = AdminAccount.load_or_create(store, "old-pw")
    await account.change("abcd")
    assert await account.check("abcd") is True


# -- a new password is stored only once the start succeeded; the file is the password --------


async def test_a_prepared_password_is_stored_only_by_commit(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="service.auth"):
        account = AdminAccount.prepare(store, None)
        # A start that fails here (a port taken) leaves nothing behind and shows nothing.
        assert store.load_admin() is None
        assert not any("generated" in r.getMessage() for r in caplog.records)
        account.commit()
        account.commit()  # once only
    shown = [r.getMessage() for r in caplog.records if "generated" in r.getMessage()]
    assert len(shown) == 1
    password = shown[0].split("password: ")[1].split(" ")[0]
    assert await AdminAccount.prepare(store, None).check(password) is True


async def test_a_configured_password_that_is_not_the_stored_one_is_warned_about(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    AdminAccount.load_or_create(store, "first-pw")
    with caplog.at_level("WARNING", logger="service.auth"):
        AdminAccount.prepare(store, "first-pw")
        assert not caplog.records  # the same password: nothing is ignored
        account = AdminAccount.prepare(store, "second-pw")
    [warning] = [r.getMessage() for r in caplog.records]
    assert "the configured admin password" in warning and "is ignored" in warning
    assert "chargebus admin-password" in warning and "second-pw" not in warning
    assert await account.check("first-pw") is True
    assert await account.check("second-pw") is False


async def test_a_password_replaced_on_disk_is_used_at_the_next_check(store: Store) -> None:
    account = AdminAccount.load_or_create(store, "old-pw")
    assert await account.check("old-pw") is True  # now cached
    # What `chargebus admin-password` does from another process.
    store.save(Store.ADMIN, hash_password("new-pw"))
    assert await account.check("old-pw") is False
    assert await account.check("new-pw") is True
    # A file that cannot be read keeps the password in use.
    store.path(Store.ADMIN).write_text("{not json")
    assert await account.check("new-pw") is True
