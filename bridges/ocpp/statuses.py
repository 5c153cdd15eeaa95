"""StatusNotification → the contract's CP `state` (1 waiting … 6 offline)."""

from __future__ import annotations

# Available/Reserved/Unavailable: no car; Preparing/Suspended*/Finishing: a car is there but
# draws nothing; Charging: it draws. Faulted (or any errorCode but NoError) is an error.
_STATE = {
    "Available": 1,
    "Reserved": 1,
    "Unavailable": 1,
    "Preparing": 2,
    "SuspendedEV": 2,
    "SuspendedEVSE": 2,
    "Finishing": 2,
    "Charging": 3,
    "Faulted": 5,
}
OFFLINE = 6


def cp_state(status: str, error_code: str = "NoError") -> int:
    if error_code not in ("", "NoError"):
        return 5
    return _STATE.get(status, 1)


def draws_current(status: str) -> bool:
    """Only a charging connector draws; the last meter values of any other are stale."""
    return status == "Charging"


def ends_session(status: str) -> bool:
    """A status after which a card shown next counts as new (the core's `seen_rfid`)."""
    return status in ("Available", "Unavailable", "Faulted")
