"""Persistence under the data dir: one JSON document per concern, replaced atomically.

Each save writes a temp file in the same directory, fsyncs it, renames it over the old one
and fsyncs the directory, so a crash at any moment leaves either the old or the new file.
A file that exists but does not parse is an error at start, never silently replaced.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError

from service.core.models import Installation, StrictModel, User

M = TypeVar("M", bound=BaseModel)


class StoreError(RuntimeError):
    """A persisted file cannot be read; the message names the file and the problem."""


class StoreWriteError(OSError):
    """Saving a document failed (disk full, read-only, no permission); the old file stands.
    An OSError with the original errno, so callers can tell the causes apart."""


class UserBook(StrictModel):
    users: dict[str, User] = Field(default_factory=dict)


class AdminSecret(StrictModel):
    """The admin password, only as a salted scrypt hash."""

    salt_hex: str
    hash_hex: str
    n: int
    r: int
    p: int


class EnergyCounters(StrictModel):
    """Energy counters that must outlive the process: the soft meters, in Wh."""

    soft_meter_wh: dict[str, float] = Field(default_factory=dict)


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def data_dir_problem(path: Path) -> str | None:
    """Why chargebus could not keep its files in `path` (created if missing), or None.
    Tried by writing a file, since permission bits do not tell (root, read-only mounts)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return "is a file, not a directory"
    except OSError as exc:
        return f"cannot be created ({exc.strerror or exc})"
    if not path.is_dir():
        return "is not a directory"
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=path)
    except OSError as exc:
        return f"is not writable ({exc.strerror or exc})"
    os.close(fd)
    Path(probe).unlink(missing_ok=True)
    return None


class Store:
    """Typed documents in a directory. Blocking: call from a worker thread on a hot path."""

    CONFIG = "config.json"
    USERS = "users.json"
    ENERGY = "energy.json"
    ADMIN = "admin.json"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def path(self, name: str) -> Path:
        return self.data_dir / name

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Temp files of a save interrupted by a crash are garbage, never a newer state.
        for leftover in self.data_dir.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)

    def load(self, name: str, model: type[M]) -> M | None:
        path = self.path(name)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            raise StoreError(
                f"{path} is corrupt or not a chargebus file ({exc.error_count()} problems, "
                f"first: {_first_error(exc)}); fix or move it away, chargebus will not "
                f"overwrite it"
            ) from exc

    def save(self, name: str, document: BaseModel) -> None:
        path = self.path(name)
        try:
            write_atomically(path, document.model_dump_json(indent=1).encode())
        except OSError as exc:
            raise StoreWriteError(exc.errno, exc.strerror or str(exc), str(path)) from exc

    def load_installation(self) -> Installation:
        return self.load(self.CONFIG, Installation) or Installation()

    def load_users(self) -> UserBook:
        return self.load(self.USERS, UserBook) or UserBook()

    def load_energy(self) -> EnergyCounters:
        return self.load(self.ENERGY, EnergyCounters) or EnergyCounters()

    def load_admin(self) -> AdminSecret | None:
        return self.load(self.ADMIN, AdminSecret)


def _first_error(exc: ValidationError) -> str:
    first: dict[str, Any] = dict(exc.errors()[0])
    where = ".".join(str(p) for p in first.get("loc", ())) or "document"
    return f"{where}: {first.get('msg', '')}"


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
