"""Runs `python -m service bridge http|modbus` as a real process, as a bridge host would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

BridgeKind = Literal["http", "modbus"]


class BridgeProcess:
    def __init__(self, kind: BridgeKind, log_path: Path, env: dict[str, str]) -> None:
        self.kind = kind
        self.log_path = log_path
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEBUS_")}
        self.env = {**inherited, **env}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service", "bridge", self.kind],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def wait_log(self, text: str, timeout: float = 20) -> None:
        """Until `text` appears in the process's output; fails early if it exits."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"bridge {self.kind} exited with {self.process.returncode}: {self.log()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no {text!r} from bridge {self.kind} in {timeout}s: {self.log()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, so the bridge shuts down as a service manager would stop it."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=15)
