"""Runs `python -m service bridge http|modbus` as a real process, as a bridge host would."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Literal

from tests.integration.service_process import ChargebusProcess

BridgeKind = Literal["http", "modbus"]


class BridgeProcess(ChargebusProcess):
    def __init__(self, kind: BridgeKind, log_path: Path, env: dict[str, str]) -> None:
        self.kind = kind
        super().__init__(["bridge", kind], log_path, env)

    def wait_log(self, text: str, timeout: float = 20) -> None:
        """Until `text` appears in the process's output; fails early if it exits."""
        deadline = time.monotonic() + timeout
        while text not in self.full_log():
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

    def full_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, so the bridge shuts down as a service manager would stop it."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)
