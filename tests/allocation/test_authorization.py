"""Who may charge where, RFID lookup, what a card does, override flags."""

from __future__ import annotations

import pytest

from service.core.authorization import (
    NO_OVERRIDES,
    Overrides,
    RfidIndex,
    RfidMatch,
    SessionAuth,
    apply_override,
    decide,
    find_rfid,
    may_charge,
    may_override,
    most_recent,
)
from service.core.models import RfidEntry, User

ANN = User(id="ann", rfids=[RfidEntry(id="AbC1"), RfidEntry(id="P2", ac_auth=False, ac_ovch=True)])
BOB = User(
    id="bob", dev_ids=["E2"], rfids=[RfidEntry(id="abc1"), RfidEntry(id="B9", used_phases=1)]
)
USERS = {"ann": ANN, "bob": BOB}


def test_override_flags_apply_in_order() -> None:
    ov = apply_override(NO_OVERRIDES, "CE")
    assert ov == Overrides(charging_disabled=True, evse_rules_disabled=True)
    assert ov.bits == 0b011
    assert apply_override(ov, "cU").bits == 0b110
    assert apply_override(ov, "Cc").charging_disabled is False


def test_override_current_cap() -> None:
    ov = apply_override(NO_OVERRIDES, mamps=8000)
    assert ov.max_current == 8000
    assert apply_override(ov, "C").max_current == 8000  # flags leave the cap alone
    assert apply_override(ov, mamps=-1).max_current is None
    assert apply_override(ov, mamps=0).max_current == 0


def test_unknown_override_flags_are_refused() -> None:
    with pytest.raises(ValueError, match="X"):
        apply_override(NO_OVERRIDES, "CX")


def test_rfid_lookup_ignores_case_and_knows_one_owner() -> None:
    # ANN's AbC1 and BOB's abc1 are one card under rfid_key; config_edit refuses such a
    # clash, and should stored data hold one, the first user wins whatever the spelling:
    # a second spelling never reaches another user's session.
    for spelling in ("abc1", "ABC1", "AbC1"):
        found = find_rfid(USERS, spelling)
        assert found is not None and found.user.id == "ann"
    b9 = find_rfid(USERS, "b9")
    assert b9 is not None and b9.user.id == "bob"
    assert find_rfid(USERS, "nope") is None
    assert find_rfid(USERS, "") is None


def test_a_pin_overrides_only_its_own_session_or_none() -> None:
    assert may_override(ANN, "E1", [], None)
    assert may_override(ANN, "E1", [], SessionAuth("ann", "AbC1"))
    assert not may_override(ANN, "E1", [], SessionAuth("bob", "B9"))
    assert not may_override(BOB, "E1", [], None)  # BOB's dev_ids name only E2


def test_rfid_phases() -> None:
    index = RfidIndex(USERS)
    assert index.phases(SessionAuth("bob", "B9")) == 1
    assert index.phases(SessionAuth("bob", "abc1")) == 0
    assert index.phases(SessionAuth("bob", None)) == 0
    assert index.phases(None) == 0


@pytest.mark.parametrize(
    ("user", "dev_id", "evse_users", "allowed"),
    [
        (ANN, "E1", ["ann"], True),  # listed, dev_ids empty
        (ANN, "E1", ["bob"], False),  # not listed
        (ANN, "E1", [], True),  # free EVSE
        (BOB, "E2", ["bob"], True),  # listed and in dev_ids
        (BOB, "E1", ["bob"], False),  # listed, but dev_ids narrows to E2
        (BOB, "E1", [], False),  # free EVSE outside dev_ids
        (BOB, "E3", ["ann"], False),  # dev_ids never grants on its own
    ],
)
def test_may_charge(user: User, dev_id: str, evse_users: list[str], allowed: bool) -> None:
    assert may_charge(user, dev_id, evse_users) is allowed


def test_decide_authorises_then_toggles_with_an_ovch_card() -> None:
    card = RfidMatch(ANN, RfidEntry(id="C", ac_auth=True, ac_ovch=True))
    auth, ov, result = decide(card, "E1", ["ann"], None, NO_OVERRIDES)
    assert result.accepted and result.action == "authorized"
    assert auth == SessionAuth("ann", "C") and ov == NO_OVERRIDES
    auth, ov, result = decide(card, "E1", ["ann"], auth, ov)
    assert result.action == "charging_disabled" and ov.charging_disabled
    auth, ov, result = decide(card, "E1", ["ann"], auth, ov)
    assert result.action == "charging_enabled" and not ov.charging_disabled
    assert auth == SessionAuth("ann", "C")


def test_decide_refusals() -> None:
    ann_card = RfidMatch(ANN, ANN.rfids[0])
    bob_card = RfidMatch(BOB, BOB.rfids[0])
    assert decide(ann_card, "E1", ["bob"], None, NO_OVERRIDES)[2].action == "not_allowed"
    taken = SessionAuth("bob", "abc1")
    kept, _, refused = decide(ann_card, "E2", ["ann", "bob"], taken, NO_OVERRIDES)
    assert refused.action == "busy" and kept == taken
    # A card that does not authorise cannot start a session where users are listed.
    no_auth = RfidMatch(ANN, ANN.rfids[1])
    assert decide(no_auth, "E1", ["ann"], None, NO_OVERRIDES)[2].action == "not_for_auth"
    # The same user's card again is fine and changes nothing.
    _, ov, result = decide(bob_card, "E2", ["bob"], taken, NO_OVERRIDES)
    assert result.accepted and ov == NO_OVERRIDES


def test_an_ovch_card_switches_a_free_evse_without_a_session() -> None:
    card = RfidMatch(ANN, ANN.rfids[1])
    auth, ov, result = decide(card, "E9", [], None, NO_OVERRIDES)
    assert auth is None and ov.charging_disabled and result.action == "charging_disabled"


def test_most_recent() -> None:
    assert most_recent([]) is None
    assert most_recent([("E1", 10.0), ("E2", 20.0), ("E3", None)]) == "E2"
    assert most_recent([("E2", 5.0), ("E1", 5.0)]) == "E1"
    assert most_recent([("E3", None), ("E2", None)]) == "E2"
