"""Runs chargebus (`python -m service ...`) as a real process for tests that restart or kill
it, or that need parts in processes of their own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tests.broker import find_free_port


class ChargebusProcess:
    """`python -m service ARGS` as a real process with its output in a log file; killed on
    leaving the block if it still runs."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.args = args
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
                [sys.executable, "-m", "service", *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout=15)

    def log(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-3000:]

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


class ServiceProcess(ChargebusProcess):
    """`chargebus run` on a free HTTP port."""

    def __init__(self, data_dir: Path, log_path: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.http_port = find_free_port()
        own = {
            "CHARGEBUS_DATA_DIR": str(data_dir),
            "CHARGEBUS_HTTP_HOST": "127.0.0.1",
            "CHARGEBUS_HTTP_PORT": str(self.http_port),
        }
        super().__init__(["run"], log_path, {**own, **env})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/cnf"

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        restarts = 3
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                if restarts and f"HTTP port {self.http_port} on 127.0.0.1 is taken" in self.log():
                    # The port was free when it was chosen, but it is only a number until the
                    # service binds it: another process of the test (or the next port choice,
                    # which the OS may answer alike) can take it meanwhile. Another port.
                    restarts -= 1
                    self.http_port = find_free_port()
                    self.env["CHARGEBUS_HTTP_PORT"] = str(self.http_port)
                    self.start()
                    continue
                raise RuntimeError(f"service exited with {self.process.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}?cmd=get_params", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        raise TimeoutError(f"service not ready in {timeout}s: {self.log()}")

    def get(self, **params: Any) -> Any:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        with urllib.request.urlopen(f"{self.url}?{query}", timeout=10) as resp:
            return json.loads(resp.read())

    def set_params(self, body: Any, password: str) -> Any:
        """POST set_params with the admin's basic auth, as curl --user admin:PW does."""
        auth = b64encode(f"admin:{password}".encode()).decode()
        request = urllib.request.Request(
            f"{self.url}?cmd=set_params",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"},
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            return json.loads(resp.read())

    def wait_exit(self, timeout: float = 20) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)
