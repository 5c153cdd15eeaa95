"""The guess throttle (service.core.throttle): token buckets per address and in total, on an
injected clock. The property tests state the bounds docs/security.md promises."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.throttle import GuessThrottle, Rates, Refusal, Ticket, address_key

RATES = Rates(per_address=1.0, address_burst=10.0, total=10.0, total_burst=30.0)


def _fail(throttle: GuessThrottle, address: str, now: float) -> bool:
    """One wrong guess; True when it reached the check."""
    verdict = throttle.admit(address, now)
    if isinstance(verdict, Refusal):
        return False
    throttle.failed(verdict, now)
    return True


def test_one_address_gets_its_burst_then_its_rate() -> None:
    throttle = GuessThrottle(RATES)
    checked = sum(_fail(throttle, "10.0.0.1", 0.0) for _ in range(100))
    assert checked == 10
    refusal = throttle.admit("10.0.0.1", 0.0)
    assert isinstance(refusal, Refusal) and math.isclose(refusal.retry_after, 1.0)
    assert _fail(throttle, "10.0.0.1", 1.0)
    assert not _fail(throttle, "10.0.0.1", 1.5)


def test_addresses_share_the_total() -> None:
    throttle = GuessThrottle(RATES)
    checked = sum(_fail(throttle, f"10.0.{i}.1", 0.0) for i in range(50) for _ in range(10))
    assert checked == 30  # total_burst, though 50 addresses had 10 each


def test_a_success_refunds_only_its_own_token() -> None:
    throttle = GuessThrottle(RATES)
    for _ in range(9):
        assert _fail(throttle, "10.0.0.1", 0.0)
    ticket = throttle.admit("10.0.0.1", 0.0)
    assert isinstance(ticket, Ticket)
    throttle.succeeded(ticket, 0.0)
    # The attacker's nine failures on this address still count: one token left, not ten.
    assert _fail(throttle, "10.0.0.1", 0.0)
    assert not _fail(throttle, "10.0.0.1", 0.0)


def test_a_trusted_address_skips_the_drained_total() -> None:
    throttle = GuessThrottle(RATES)
    ticket = throttle.admit("192.168.1.5", 0.0)
    assert isinstance(ticket, Ticket)
    throttle.succeeded(ticket, 0.0)
    for i in range(100):
        _fail(throttle, f"10.1.0.{i}", 0.5)
    assert isinstance(throttle.admit("10.2.0.1", 0.5), Refusal)  # the total is drained
    assert isinstance(throttle.admit("192.168.1.5", 0.5), Ticket)  # the admin is not


def test_trust_ends() -> None:
    throttle = GuessThrottle(Rates(trusted_for=10.0, total_burst=1.0, total=0.001))
    ticket = throttle.admit("192.168.1.5", 0.0)
    assert isinstance(ticket, Ticket) and ticket.shared
    throttle.succeeded(ticket, 0.0)
    _fail(throttle, "10.0.0.1", 0.0)
    assert isinstance(throttle.admit("192.168.1.5", 5.0), Ticket)
    assert isinstance(throttle.admit("192.168.1.5", 20.0), Refusal)


def test_ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert address_key("?") == "?"


def test_the_table_is_bounded_and_forgets_refilled_entries_first() -> None:
    rates = Rates(max_addresses=5, per_address=0.001, address_burst=1.0, trusted_for=0.0,
                  total=1e9, total_burst=1e9)
    throttle = GuessThrottle(rates)
    assert _fail(throttle, "10.0.0.1", 0.0)  # drained: worth keeping
    for i in range(2, 200):
        ticket = throttle.admit(f"10.0.0.{i}", 1.0)
        assert isinstance(ticket, Ticket)
        throttle.succeeded(ticket, 1.0)  # refilled at once: says nothing
    assert throttle.tracked() <= 5
    assert not _fail(throttle, "10.0.0.1", 1.0)


# -- the bounds, for any sequence of attempts ------------------------------------------------

ATTEMPTS = st.lists(
    st.tuples(
        st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3", "2001:db8::1", "2001:db8::2"]),
        st.floats(min_value=0.0, max_value=5.0),  # time step
        st.booleans(),  # the guess is right
    ),
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(ATTEMPTS)
def test_failed_checks_never_exceed_the_budgets(attempts: list[tuple[str, float, bool]]) -> None:
    """Over any window [t0, t1]: failed checks per address ≤ burst + rate·(t1 - t0); all
    untrusted failures ≤ total burst + total rate·(t1 - t0)."""
    throttle = GuessThrottle(RATES)
    now = 0.0
    failures: list[tuple[float, str, bool]] = []  # (time, key, counted in the total)
    for address, step, right in attempts:
        now += step
        verdict = throttle.admit(address, now)
        if isinstance(verdict, Refusal):
            assert verdict.retry_after > 0
            continue
        if right:
            throttle.succeeded(verdict, now)
        else:
            throttle.failed(verdict, now)
            failures.append((now, verdict.key, verdict.shared))
    times = sorted({t for t, _, _ in failures})
    for i, t0 in enumerate(times):
        for t1 in times[i:]:
            window = [(k, shared) for t, k, shared in failures if t0 <= t <= t1]
            budget = RATES.total_burst + RATES.total * (t1 - t0)
            assert sum(shared for _, shared in window) <= budget + 1e-9
            for key in {k for k, _ in window}:
                own = sum(k == key for k, _ in window)
                assert own <= RATES.address_burst + RATES.per_address * (t1 - t0) + 1e-9


@settings(max_examples=100, deadline=None)
@given(ATTEMPTS)
def test_an_address_that_never_failed_is_never_refused_by_its_own_bucket(
    attempts: list[tuple[str, float, bool]],
) -> None:
    """Right guesses give their token back: a client that is always right is never refused
    (when its address is trusted, not even while others drain the total)."""
    throttle = GuessThrottle(RATES)
    now = 0.0
    admin = "192.168.7.7"
    first = throttle.admit(admin, now)
    assert isinstance(first, Ticket)
    throttle.succeeded(first, now)
    for address, step, right in attempts:
        now += step
        verdict = throttle.admit(address, now)
        if isinstance(verdict, Ticket):
            (throttle.succeeded if right else throttle.failed)(verdict, now)
        mine = throttle.admit(admin, now)
        assert isinstance(mine, Ticket)
        throttle.succeeded(mine, now)


def test_an_unused_ticket_comes_back_without_trust() -> None:
    """A connection that asked for no credential costs nothing, and earns no way around the
    shared limit (an open OCPP box beside a locked one)."""
    throttle = GuessThrottle(RATES)
    for _ in range(50):
        ticket = throttle.admit("10.0.0.1", 0.0)
        assert isinstance(ticket, Ticket)
        throttle.unused(ticket, 0.0)
    # Its own burst and the shared one are untouched, and it is not trusted: its wrong
    # guesses stop at its own burst, and the others' at the shared one as before.
    assert sum(_fail(throttle, "10.0.0.1", 0.0) for _ in range(100)) == 10
    assert sum(_fail(throttle, f"10.0.{i}.2", 0.0) for i in range(50) for _ in range(10)) == 20
