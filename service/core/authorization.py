"""Who may charge where, RFID/PIN handling and per-session overrides — the state changes only.

Whether a *caller* may send `enter_rfid` or `override_device` (admin password, user PIN) is
the HTTP layer's check; this module decides what a valid request does to a charging session.

Decisions (the cFos user documentation says the admin assigns wallboxes to users and that
"as soon as at least one user is assigned to a wallbox, charging at this box must be
authorised with PIN or RFID"; https://www.cfos-emobility.de/en/cfos-charging-manager/
documentation/users.htm):

* An EVSE whose `users` list is not empty charges only after a PIN/RFID of a user on that list.
  The user's own `dev_ids` can only narrow this further: empty means "wherever an EVSE lists
  me", otherwise the EVSE must be in it too. The EVSE's list, which only the admin edits, is
  the grant; `dev_ids` is part of the user object that users may edit themselves, so it never
  grants anything on its own.
* At an EVSE without a users list any known RFID whose user's `dev_ids` allow it attaches that
  user to the session (for the user's charging rules and the card's `used_phases`).
* RFID entries are matched on their `id` ignoring case (readers differ in how they print hex
  ids), and the same normalisation (`rfid_key`) decides whether two users' cards clash, so a
  card cannot be taken over by registering it again in other letter case.
* `ac_auth` cards authorise. `ac_ovch` cards switch charging off and on again (override C / c)
  on a session they already belong to; on an EVSE without a users list such a card does that
  even before anyone authorised.
* Overrides and authorisation last until the vehicle leaves (the EVSE reports state 1 after a
  vehicle state); the allocation clears them then. An override given while no vehicle is
  present therefore holds for the next vehicle's session.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from service.core.models import RfidEntry, User

OVERRIDE_FLAGS: Final = frozenset("CcEeUu")
# get_dev_info `overrides`: bit0 = charging disabled (C), bit1 = EVSE rules disabled (E) as
# clients read them; bit2 = user rules disabled (U).
BIT_CHARGING: Final = 1
BIT_EVSE_RULES: Final = 2
BIT_USER_RULES: Final = 4


@dataclass(frozen=True, slots=True)
class SessionAuth:
    """Who authorised the present session (either may be None when unknown)."""

    user_id: str | None
    rfid: str | None


@dataclass(frozen=True, slots=True)
class Overrides:
    charging_disabled: bool = False
    evse_rules_disabled: bool = False
    user_rules_disabled: bool = False
    max_current: int | None = None  # mA cap; None = no cap

    @property
    def bits(self) -> int:
        return (
            (BIT_CHARGING if self.charging_disabled else 0)
            | (BIT_EVSE_RULES if self.evse_rules_disabled else 0)
            | (BIT_USER_RULES if self.user_rules_disabled else 0)
        )


NO_OVERRIDES: Final = Overrides()


def apply_override(current: Overrides, flags: str = "", mamps: int | None = None) -> Overrides:
    """Applies override_device flags in the order given, then `mamps`.

    `mamps` ≥ 0 caps the charging current at that many mA; a negative value removes the cap;
    None leaves it as it is. Unknown flag letters raise ValueError and change nothing.
    """
    unknown = set(flags) - OVERRIDE_FLAGS
    if unknown:
        raise ValueError(f"unknown override flags: {''.join(sorted(unknown))}")
    out = current
    for flag in flags:
        if flag in "Cc":
            out = replace(out, charging_disabled=flag == "C")
        elif flag in "Ee":
            out = replace(out, evse_rules_disabled=flag == "E")
        else:
            out = replace(out, user_rules_disabled=flag == "U")
    if mamps is not None:
        out = replace(out, max_current=mamps if mamps >= 0 else None)
    return out


@dataclass(frozen=True, slots=True)
class RfidMatch:
    user: User
    entry: RfidEntry


def rfid_key(rfid: str) -> str:
    """The one normalisation of an RFID/PIN, for lookup and for uniqueness alike."""
    return rfid.casefold()


class RfidIndex:
    """RFID/PIN lookup over all users, built once. Users' cards are unique under rfid_key
    (config_edit refuses a clash); should stored data still hold one, the first user wins."""

    __slots__ = ("_by_key",)

    def __init__(self, users: Mapping[str, User]) -> None:
        self._by_key: dict[str, RfidMatch] = {}
        for user in users.values():
            for entry in user.rfids:
                self._by_key.setdefault(rfid_key(entry.id), RfidMatch(user, entry))

    def find(self, rfid: str) -> RfidMatch | None:
        if not rfid:
            return None
        return self._by_key.get(rfid_key(rfid))

    def phases(self, auth: SessionAuth | None) -> int:
        """The `used_phases` of the card that authorised a session, 0 when none is known."""
        if auth is None or auth.rfid is None:
            return 0
        match = self.find(auth.rfid)
        return match.entry.used_phases if match is not None else 0


def find_rfid(users: Mapping[str, User], rfid: str) -> RfidMatch | None:
    """The user and card entry an RFID/PIN belongs to."""
    return RfidIndex(users).find(rfid)


def may_charge(user: User, dev_id: str, evse_users: Sequence[str]) -> bool:
    """Whether `user` may charge at EVSE `dev_id` (see the module docstring)."""
    if user.dev_ids and dev_id not in user.dev_ids:
        return False
    return not evse_users or user.id in evse_users


def may_override(
    user: User, dev_id: str, evse_users: Sequence[str], auth: SessionAuth | None
) -> bool:
    """Whether `user`'s PIN may override the session at `dev_id` (override_device without the
    admin): the user may charge there, and the session is theirs or nobody's."""
    if not may_charge(user, dev_id, evse_users):
        return False
    return auth is None or auth.user_id is None or auth.user_id == user.id


def user_without_secrets(user: User) -> dict[str, object]:
    """A user record for anyone but the admin: no RFIDs/PINs."""
    shown = user.model_dump()
    del shown["rfids"]
    return shown


@dataclass(frozen=True, slots=True)
class RfidResult:
    """What an entered PIN/RFID did.

    `action` is one of: authorized, charging_disabled, charging_enabled (accepted), or
    unknown_rfid, not_allowed, no_evse, unknown_evse, busy, not_for_auth (refused).
    """

    accepted: bool
    action: str
    dev_id: str | None = None
    user_id: str | None = None


def decide(
    match: RfidMatch,
    dev_id: str,
    evse_users: Sequence[str],
    auth: SessionAuth | None,
    overrides: Overrides,
) -> tuple[SessionAuth | None, Overrides, RfidResult]:
    """A known card presented at one EVSE: the session's new auth and overrides."""
    user, entry = match.user, match.entry
    if not may_charge(user, dev_id, evse_users):
        return auth, overrides, RfidResult(False, "not_allowed", dev_id, user.id)
    if auth is not None and auth.user_id is not None and auth.user_id != user.id:
        return auth, overrides, RfidResult(False, "busy", dev_id, user.id)
    if auth is None and entry.ac_auth:
        return (
            SessionAuth(user.id, entry.id),
            overrides,
            RfidResult(True, "authorized", dev_id, user.id),
        )
    if entry.ac_ovch and (auth is not None or not evse_users):
        disabled = not overrides.charging_disabled
        action = "charging_disabled" if disabled else "charging_enabled"
        return (
            auth,
            replace(overrides, charging_disabled=disabled),
            RfidResult(True, action, dev_id, user.id),
        )
    if auth is not None:
        # The same user again: nothing changes, and that is not an error.
        return auth, overrides, RfidResult(True, "authorized", dev_id, user.id)
    return auth, overrides, RfidResult(False, "not_for_auth", dev_id, user.id)


def most_recent(candidates: Iterable[tuple[str, float | None]]) -> str | None:
    """The EVSE plugged in most recently (unknown plug times count as oldest; ties go to the
    smaller device id so that the choice never depends on iteration order)."""
    best: tuple[float, str] | None = None
    for dev_id, plugged_at in candidates:
        t = plugged_at if plugged_at is not None else float("-inf")
        if best is None or t > best[0] or (t == best[0] and dev_id < best[1]):
            best = (t, dev_id)
    return best[1] if best is not None else None
