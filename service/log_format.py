"""Log output: the usual text lines, or one JSON object per line for log collectors."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_BARE_RECORD = logging.LogRecord("", logging.INFO, "", 0, "", None, None)
_STANDARD_ATTRS = frozenset(vars(_BARE_RECORD)) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (ISO 8601, UTC), level, logger, message, exception and
    stack text when present, and the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            # Formatter caches the text on the record, as the text formatter does.
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in entry:
                entry[key] = value
        # default=str: an extra field of any type must not cost the log line.
        return json.dumps(entry, default=str, ensure_ascii=False)


def make_formatter(fmt: Literal["text", "json"]) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(level: str, fmt: Literal["text", "json"] = "text") -> logging.Handler:
    """Logs to stderr from the root logger; returns the handler (tests remove it again)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level.upper())
    handler.setFormatter(make_formatter(fmt))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())
    # pymodbus logs every server start and client retry at INFO; our bridge logs what matters.
    if logging.getLevelName(level.upper()) == logging.INFO:
        logging.getLogger("pymodbus").setLevel(logging.WARNING)
    return handler
