"""Session events: what a new EVSE state (plugged in, unplugged, RFID shown, phases drawn)
and the user's commands (`enter_rfid`, `override`) do to an EVSE's memory."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

from service.core.allocation.model import (
    CHARGING_STATES,
    PREAUTH_S,
    STATE_NO_VEHICLE,
    VEHICLE_STATES,
    EvseInput,
    EvseMemory,
    Memory,
    fresh,
)
from service.core.authorization import (
    RfidIndex,
    RfidResult,
    apply_override,
    decide,
    find_rfid,
    may_charge,
    most_recent,
)
from service.core.models import EvseConfig, EvseState, User
from service.core.phases import measured_mask


def may_start_or_end_a_session(mem: EvseMemory, s: int, rfid: str, measured: int) -> bool:
    """Whether a state (`s`, its `rfid`, the phases `measured` drawing) may change the
    session in `mem`: only then is `after_state` worth its cost."""
    return (
        s != mem.last_state
        or rfid != mem.seen_rfid
        or (s == STATE_NO_VEHICLE and mem.auth is not None)
        # Phases measured now: not none, and not what was learned.
        or (s in CHARGING_STATES and 0 != measured != mem.learned_phases)
    )


def after_state(
    dev_id: str,
    mem: EvseMemory,
    st: EvseState,
    now: float,
    config: EvseConfig,
    rfids: RfidIndex,
) -> EvseMemory:
    """The EVSE's memory after this state: session start and end, RFID, phase learning.
    Returns `mem` itself when nothing changed."""
    m = mem
    s = st.state
    last = m.last_state
    if s == STATE_NO_VEHICLE:
        if last is not None and last != STATE_NO_VEHICLE:
            # The vehicle left: the session, its authorisation and overrides end.
            m = EvseMemory(last_state=s, seen_rfid=m.seen_rfid)
        elif m.auth is not None and m.auth_at is not None and now - m.auth_at > PREAUTH_S:
            m = m._replace(auth=None, auth_at=None)
    elif s in VEHICLE_STATES and (last is None or last not in VEHICLE_STATES):
        m = m._replace(plugged_at=now)
    if m.last_state != s:
        m = m._replace(last_state=s)
    rfid = st.rfid
    if rfid != m.seen_rfid:
        if rfid:
            match = rfids.find(rfid)
            if match is not None:
                auth, ov, _ = decide(match, dev_id, config.users, m.auth, m.overrides)
                m = m._replace(
                    auth=auth, overrides=ov, auth_at=now if auth != m.auth else m.auth_at
                )
        m = m._replace(seen_rfid=rfid)
    if s in CHARGING_STATES:
        learned = measured_mask(st.current)
        if learned and learned != m.learned_phases:
            m = m._replace(learned_phases=learned)
    return m


def enter_rfid(
    memory: Memory,
    rfid: str,
    dev_id: str | None,
    users: Mapping[str, User],
    evses: Mapping[str, EvseInput],
    now: float,
    stale_after_s: float = math.inf,
) -> tuple[Memory, RfidResult]:
    """A PIN/RFID entered (cmd=enter_rfid). Without `dev_id` it goes to the EVSE with a vehicle
    that waits for authorisation and that the user may use; of several, the one plugged in
    most recently."""
    match = find_rfid(users, rfid)
    if match is None:
        return memory, RfidResult(False, "unknown_rfid", dev_id)
    user = match.user
    if dev_id is None:
        dev_id = _waiting_for(memory, user, evses, now, stale_after_s)
        if dev_id is None:
            return memory, RfidResult(False, "no_evse", None, user.id)
    elif dev_id not in evses:
        return memory, RfidResult(False, "unknown_evse", dev_id, user.id)
    mem = memory.evse(dev_id)
    auth, overrides, result = decide(
        match, dev_id, evses[dev_id].config.users, mem.auth, mem.overrides
    )
    if not result.accepted:
        return memory, result
    auth_at = now if auth != mem.auth else mem.auth_at
    updated = mem._replace(auth=auth, overrides=overrides, auth_at=auth_at)
    return _with_evse(memory, dev_id, updated), result


def _waiting_for(
    memory: Memory, user: User, evses: Mapping[str, EvseInput], now: float, stale: float
) -> str | None:
    """The EVSE a card without an EVSE goes to: of those with a fresh vehicle that wait for
    authorisation and that the user may use, the one plugged in most recently."""
    waiting: list[tuple[str, float | None]] = []
    for d, ev in evses.items():
        cfg = ev.config
        mem = memory.evse(d)
        if (
            cfg.users
            and ev.state is not None
            and ev.state.state in VEHICLE_STATES
            and fresh(ev.state, ev.state_age_s, stale)
            and mem.auth is None
            and may_charge(user, d, cfg.users)
        ):
            # A vehicle that arrived after the last allocation has no plug time yet.
            plugged = mem.plugged_at if mem.last_state in VEHICLE_STATES else now
            waiting.append((d, plugged))
    return most_recent(waiting)


def override(memory: Memory, dev_id: str, flags: str = "", mamps: int | None = None) -> Memory:
    """override_device for the present (or next) session of `dev_id`; see
    authorization.apply_override for the flags and `mamps`."""
    mem = memory.evse(dev_id)
    updated = mem._replace(overrides=apply_override(mem.overrides, flags, mamps))
    return _with_evse(memory, dev_id, updated)


def _with_evse(memory: Memory, dev_id: str, mem: EvseMemory) -> Memory:
    evses = dict(memory.evses)
    evses[dev_id] = mem
    return replace(memory, evses=evses)
