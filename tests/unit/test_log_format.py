"""service.log_format: one JSON object per line, or the usual text."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from service.log_format import JsonFormatter, configure_logging, make_formatter


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("chargebus.test_log_format")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_is_one_json_object(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.warning("device %s lost", "E1")
    [entry] = lines(stream)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "chargebus.test_log_format"
    assert entry["message"] == "device E1 lost"
    assert datetime.fromisoformat(entry["ts"]).utcoffset() is not None
    assert "exception" not in entry


def test_extra_fields_are_kept(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured

    class Opaque:
        def __str__(self) -> str:
            return "opaque!"

    logger.info("run", extra={"dev_id": "E2", "current_ma": 6000, "thing": Opaque()})
    [entry] = lines(stream)
    assert entry["dev_id"] == "E2"
    assert entry["current_ma"] == 6000
    assert entry["thing"] == "opaque!"
    # The record's own attributes stay out.
    assert not {"args", "msg", "levelno", "pathname", "exc_info"} & set(entry)


def test_exception_text_is_included(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    try:
        raise ValueError("bad payload\nsecond line")
    except ValueError:
        logger.exception("handling failed")
    output = stream.getvalue()
    # Multi-line tracebacks stay inside the one line of JSON.
    assert len(output.splitlines()) == 1
    [entry] = lines(stream)
    assert entry["message"] == "handling failed"
    assert "Traceback" in entry["exception"]
    assert "ValueError: bad payload" in entry["exception"]


def test_text_format_is_the_plain_formatter() -> None:
    assert not isinstance(make_formatter("text"), JsonFormatter)
    assert isinstance(make_formatter("json"), JsonFormatter)


def test_configure_logging_installs_a_json_handler_on_root() -> None:
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("debug", "json")
    try:
        assert handler in root.handlers
        assert isinstance(handler.formatter, JsonFormatter)
        assert root.level == logging.DEBUG
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
