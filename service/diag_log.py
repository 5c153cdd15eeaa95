"""Diagnostic logging on request: everything at DEBUG into a file, stopping by itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)


class DiagLogging:
    def __init__(self, directory: Path, max_seconds: float) -> None:
        self.directory = directory
        self.max_seconds = max_seconds
        self._handler: logging.FileHandler | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._saved_root_level = logging.WARNING
        self.path: Path | None = None

    @property
    def active(self) -> bool:
        return self._handler is not None

    def start(self) -> Path:
        """Starts (or restarts the 5-minute clock of) a diagnostic log; returns its file."""
        if self._handler is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.path = self.directory / time.strftime("diag-%Y%m%d-%H%M%S.log")
            handler = logging.FileHandler(self.path, encoding="utf-8")
            handler.setLevel(logging.DEBUG)
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            root = logging.getLogger()
            self._saved_root_level = root.level
            # Console handlers carry their own level, so lowering the root's only feeds
            # the file.
            root.setLevel(logging.DEBUG)
            root.addHandler(handler)
            self._handler = handler
            log.info("diagnostic logging started: %s", self.path)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self.max_seconds, self.stop)
        assert self.path is not None
        return self.path

    def check_writable(self) -> None:
        """Writes and syncs a line to the log file; raises OSError when the disk refuses it
        (the handler itself would only complain on stderr and lose every line)."""
        handler = self._handler
        if handler is None or self.path is None:
            return
        with handler.lock or contextlib.nullcontext():
            stream = handler.stream
            if stream is None:  # FileHandler opens lazily only with delay=True; not here
                return
            stream.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} diagnostic log is writable\n")
            stream.flush()
            os.fsync(stream.fileno())

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        handler = self._handler
        if handler is None:
            return
        log.info("diagnostic logging stopped")
        root = logging.getLogger()
        root.removeHandler(handler)
        root.setLevel(self._saved_root_level)
        # A full disk fails the last flush; the log stops all the same.
        with contextlib.suppress(OSError):
            handler.close()
        self._handler = None
