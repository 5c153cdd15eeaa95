"""Topic names and parsing of device topics."""

from __future__ import annotations

import pytest

from service.topics import Topics


def test_topic_names() -> None:
    topics = Topics("home/cb")
    assert topics.status == "home/cb/status"
    assert topics.params == "home/cb/params"
    assert topics.state("E1") == "home/cb/devices/E1/state"
    assert topics.config("M2") == "home/cb/devices/M2/config"
    assert topics.set("E1") == "home/cb/devices/E1/set"
    assert topics.all_devices("state") == "home/cb/devices/+/state"


@pytest.mark.parametrize("leaf", ["state", "config", "info", "command", "set"])
def test_parse_round_trips_built_topics(leaf: str) -> None:
    topics = Topics("chargebus")
    built = getattr(topics, leaf)("E12")
    assert topics.parse_device_topic(built) == ("E12", leaf)


def test_parse_device_topic() -> None:
    assert Topics("chargebus").parse_device_topic("chargebus/devices/M1/state") == ("M1", "state")


@pytest.mark.parametrize(
    "topic",
    [
        "chargebus/devices/E1",
        "chargebus/devices/E1/state/extra",
        "chargebus/devices/E1/",
        "chargebus/devices//state",
        "chargebus/devices/",
        "chargebus/status",
        "other/devices/E1/state",
        "chargebus2/devices/E1/state",
        "xchargebus/devices/E1/state",
        "",
    ],
)
def test_parse_device_topic_refuses(topic: str) -> None:
    assert Topics("chargebus").parse_device_topic(topic) is None


def test_parse_with_multi_level_base() -> None:
    topics = Topics("a/b")
    assert topics.parse_device_topic("a/b/devices/E1/set") == ("E1", "set")
    assert topics.parse_device_topic("a/devices/E1/set") is None
