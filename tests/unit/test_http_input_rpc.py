"""The pure parts of the shared HTTP-input RPC: request and reply envelopes."""

from __future__ import annotations

import json

import pytest

from bridges.http_input import InputError, request_values
from bridges.http_input_rpc import parse_request, shared_subscription
from service.rpc_client import RpcReply, parse_reply, reply_prefix
from service.topics import Topics

TOPICS = Topics("siteA")
PREFIX = reply_prefix(TOPICS)


def request(**fields: object) -> bytes:
    base = {
        "id": 7,
        "reply_to": "siteA/rpc/reply/core-1",
        "cmd": "set_ajax_evse",
        "dev_id": "E1",
        "values": {"state": 3},
        "from_query": False,
    }
    return json.dumps({**base, **fields}).encode()


def test_shared_subscription_is_per_site() -> None:
    assert shared_subscription(TOPICS) == "$share/http-input/siteA/rpc/http-input/request"


def test_a_request_parses() -> None:
    parsed = parse_request(request(), PREFIX)
    assert parsed is not None
    assert (parsed.id, parsed.cmd, parsed.dev_id, parsed.values) == (
        7,
        "set_ajax_evse",
        "E1",
        {"state": 3},
    )
    assert parsed.from_query is False


@pytest.mark.parametrize(
    "reply_to",
    [
        "siteA/devices/E1/command",  # a forged reply must not command a wallbox
        "siteB/rpc/reply/core-1",  # nor answer into another site
        "siteA/rpc/reply/+",
        "siteA/rpc/reply/#",
        17,
    ],
)
def test_a_reply_goes_only_under_the_sites_reply_topics(reply_to: object) -> None:
    assert parse_request(request(reply_to=reply_to), PREFIX) is None


@pytest.mark.parametrize("payload", [b"", b"[]", b"{}", b'{"id": "7"}', request(id=True)])
def test_unanswerable_requests_are_dropped(payload: bytes) -> None:
    assert parse_request(payload, PREFIX) is None


def test_odd_fields_become_empty_and_are_refused_later() -> None:
    parsed = parse_request(request(cmd=3, dev_id=None, from_query="yes"), PREFIX)
    assert parsed is not None
    assert (parsed.cmd, parsed.dev_id, parsed.from_query) == ("", "", False)


def test_request_values_read_like_the_in_process_bridge() -> None:
    assert request_values("GET", {"state": "3"}, b"") == ({"state": "3"}, True)
    assert request_values("POST", {"a": "1"}, b"  ") == ({"a": "1"}, True)
    assert request_values("POST", {}, b'{"state": 2}') == ({"state": 2}, False)
    with pytest.raises(InputError) as refused:
        request_values("POST", {}, b"{nope")
    assert refused.value.status == 400


def test_replies_parse_with_or_without_by() -> None:
    assert parse_reply(b'{"id": 1, "status": 200, "body": "ok"}') == (1, RpcReply(200, "ok"))
    assert parse_reply(b'{"id": 2, "status": 504, "body": "late", "by": "h-1"}') == (
        2,
        RpcReply(504, "late", "h-1"),
    )
    assert parse_reply(b'{"id": 1}') is None
    assert parse_reply(b"[1]") is None
