"""Register maps and the value codec of `cmd=modbus` (pure: no I/O).

An address as `cmd=modbus` takes it carries a suffix naming the type: none = 16-bit,
`d` = 32-bit (2 registers), `q` = 64-bit (4 registers), `s` = string (as long as the map
entry). Words are big-endian, the high word first.

Decoding follows the API's documented answers, not the registers' meaning: a plain 16-bit read
is unsigned (`read=8002&count=10` answers 26211 for 0x6663), `d` and `q` are signed (`8062d` of
an idle meter answers -1, `8000d` of 0xcf05 0x0000 answers -821755904). Encoding accepts both
the signed and the unsigned range of the width, so a client may write 0xcf050000 or -821755904.

Address rules (`check_read` / `check_write`), decided where the API document is silent:

- Reads at an address that starts a map entry must use that entry's size: `read=8062` of the
  32-bit power register is refused like `write=8044d` is ("bad modbus register size").
- Reads of addresses the map doesn't start an entry at (inside an entry, or unknown) are raw
  reads: any numeric suffix is allowed, since a client may know registers we don't; `s` is
  refused there because only the map knows a string's length.
- `count=N` reads N consecutive plain registers with no size check: the API's own example
  (`read=8002&count=10`) runs across 8004d and into the 8008s string.
- Writes must start on a map entry, match its size, and cover only writable entries; `values`
  writes consecutive 16-bit registers and must end on an entry boundary, so
  `write=8044&values=[7,230,230,230]` sets 8044..8047 and nothing is ever half-written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal, get_args

RegisterKind = Literal["u16", "i16", "i32", "u32", "i64", "str"]
Suffix = Literal["", "d", "q", "s"]

SUFFIXES: tuple[Suffix, ...] = get_args(Suffix)
SUFFIX_REGISTERS: dict[Suffix, int] = {"": 1, "d": 2, "q": 4}
KIND_REGISTERS: dict[RegisterKind, int] = {"u16": 1, "i16": 1, "i32": 2, "u32": 2, "i64": 4}
COUNT_SUFFIX: dict[int, Suffix] = {1: "", 2: "d", 4: "q"}

# The API's answers, word for word: clients match on them.
BAD_SIZE = "bad modbus register size"
BAD_ADDRESS = "bad modbus register"
UNKNOWN_REGISTER = "unknown modbus register"
READ_ONLY = "modbus register is read-only"
BAD_VALUE = "modbus value out of range"


class RegisterError(ValueError):
    """A request the register map refuses; str(error) is the API's answer."""


@dataclass(frozen=True, slots=True)
class RegisterEntry:
    address: int
    count: int
    kind: RegisterKind
    name: str
    writable: bool

    def __post_init__(self) -> None:
        expected = KIND_REGISTERS.get(self.kind)
        if expected is not None and expected != self.count:
            raise ValueError(f"{self.name}: kind {self.kind} needs {expected} registers")
        if self.count < 1 or not 0 <= self.address <= 0xFFFF - self.count + 1:
            raise ValueError(f"{self.name}: bad address/count {self.address}/{self.count}")

    @property
    def end(self) -> int:
        """First address after this entry."""
        return self.address + self.count

    @property
    def suffix(self) -> Suffix:
        if self.kind == "str":
            return "s"
        return COUNT_SUFFIX[self.count]

    @property
    def key(self) -> str:
        """The entry's key in a `read=all` answer, e.g. "8042d"."""
        return f"{self.address}{self.suffix}"


class RegisterMap:
    """Entries in address order; entries never overlap."""

    def __init__(self, entries: Iterable[RegisterEntry]) -> None:
        ordered = sorted(entries, key=lambda e: e.address)
        for before, after in pairwise(ordered):
            if after.address < before.end:
                raise ValueError(f"{after.name} overlaps {before.name}")
        self._entries = tuple(ordered)
        self._by_address = {e.address: e for e in ordered}

    def entries(self) -> tuple[RegisterEntry, ...]:
        return self._entries

    def entry_at(self, address: int) -> RegisterEntry | None:
        """The entry that starts at `address` (not one that merely covers it)."""
        return self._by_address.get(address)

    def entry_covering(self, address: int) -> RegisterEntry | None:
        for entry in self._entries:
            if entry.address <= address < entry.end:
                return entry
        return None

    def by_name(self, name: str) -> RegisterEntry:
        for entry in self._entries:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def __len__(self) -> int:
        return len(self._entries)


def parse_address(text: str) -> tuple[int, Suffix]:
    """ "8062d" -> (8062, "d"); "8002" -> (8002, "")."""
    text = text.strip()
    suffix: Suffix = ""
    if text and text[-1].lower() in ("d", "q", "s"):
        suffix = text[-1].lower()  # type: ignore[assignment]
        text = text[:-1]
    if not text.isdigit() or not text.isascii():
        raise RegisterError(BAD_ADDRESS)
    address = int(text)
    if address > 0xFFFF:
        raise RegisterError(BAD_ADDRESS)
    return address, suffix


def check_read(regmap: RegisterMap, address: int, suffix: Suffix) -> int:
    """Number of registers a single read of `address` with `suffix` takes (see module doc)."""
    entry = regmap.entry_at(address)
    if entry is None:
        if suffix == "s":
            raise RegisterError(BAD_SIZE)
        return _fits(address, SUFFIX_REGISTERS[suffix])
    if suffix != entry.suffix:
        raise RegisterError(BAD_SIZE)
    return entry.count


def check_count_read(address: int, count: int) -> int:
    """`read=A&count=N`: N raw 16-bit registers (Modbus allows at most 125 per request)."""
    if not 1 <= count <= 125:
        raise RegisterError(BAD_SIZE)
    return _fits(address, count)


def check_write(regmap: RegisterMap, address: int, suffix: Suffix, n_values: int = 1) -> int:
    """Number of registers a write takes; `n_values` > 1 for `values=[...]` (16-bit each)."""
    entry = regmap.entry_at(address)
    if entry is None:
        raise RegisterError(UNKNOWN_REGISTER)
    if n_values > 1:
        if suffix != "":
            raise RegisterError(BAD_SIZE)
        count = _fits(address, n_values)
    else:
        if suffix != entry.suffix:
            raise RegisterError(BAD_SIZE)
        count = entry.count
    covered = _entries_between(regmap, address, address + count)
    if covered[-1].end != address + count:
        raise RegisterError(BAD_SIZE)
    if not all(e.writable for e in covered):
        raise RegisterError(READ_ONLY)
    return count


def _entries_between(regmap: RegisterMap, start: int, end: int) -> list[RegisterEntry]:
    """The entries tiling [start, end) without gaps; raises for a gap."""
    found: list[RegisterEntry] = []
    at = start
    while at < end:
        entry = regmap.entry_at(at)
        if entry is None:
            raise RegisterError(UNKNOWN_REGISTER)
        found.append(entry)
        at = entry.end
    return found


def _fits(address: int, count: int) -> int:
    if address + count - 1 > 0xFFFF:
        raise RegisterError(BAD_ADDRESS)
    return count


def decode(kind_suffix: Suffix, registers: Sequence[int]) -> int | str:
    """Registers as the API answers them (see module doc for signedness)."""
    if kind_suffix == "s":
        raw = b"".join(_check_word(r).to_bytes(2, "big") for r in registers)
        return raw.rstrip(b"\0").decode("ascii", errors="replace")
    width = SUFFIX_REGISTERS[kind_suffix]
    if len(registers) != width:
        raise RegisterError(BAD_SIZE)
    value = 0
    for word in registers:
        value = (value << 16) | _check_word(word)
    if kind_suffix == "":
        return value
    bits = 16 * width
    return value - (1 << bits) if value >> (bits - 1) else value


def decode_int(kind_suffix: Suffix, registers: Sequence[int]) -> int:
    """decode() for the numeric suffixes."""
    if kind_suffix == "s":
        raise RegisterError(BAD_SIZE)
    value = decode(kind_suffix, registers)
    assert isinstance(value, int)
    return value


def encode(kind_suffix: Suffix, value: int | str, *, count: int | None = None) -> list[int]:
    """Registers for `value`; `count` is the string entry's length for `s` (padded with NULs)."""
    if kind_suffix == "s":
        if not isinstance(value, str):
            raise RegisterError(BAD_VALUE)
        return _encode_str(value, count)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RegisterError(BAD_VALUE)
    width = SUFFIX_REGISTERS[kind_suffix]
    if count is not None and count != width:
        raise RegisterError(BAD_SIZE)
    bits = 16 * width
    if not -(1 << (bits - 1)) <= value < (1 << bits):
        raise RegisterError(BAD_VALUE)
    unsigned = value & ((1 << bits) - 1)
    return [(unsigned >> (16 * (width - 1 - i))) & 0xFFFF for i in range(width)]


def _encode_str(value: str, count: int | None) -> list[int]:
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raise RegisterError(BAD_VALUE) from None
    if b"\0" in raw:
        raise RegisterError(BAD_VALUE)
    words = count if count is not None else (len(raw) + 1) // 2
    if len(raw) > 2 * words:
        raise RegisterError(BAD_VALUE)
    raw = raw.ljust(2 * words, b"\0")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def decode_kind(kind: RegisterKind, registers: Sequence[int]) -> int | str:
    """Registers by the entry's meaning (u32 vendor id stays positive), for pollers."""
    if kind == "str":
        return decode("s", registers)
    value = decode(COUNT_SUFFIX[KIND_REGISTERS[kind]], registers)
    assert isinstance(value, int)
    if kind == "i16" and value >= 0x8000:
        return value - 0x10000
    if kind == "u32" and value < 0:
        return value + (1 << 32)
    return value


def _check_word(word: int) -> int:
    if not 0 <= word <= 0xFFFF:
        raise RegisterError(BAD_VALUE)
    return word


def read_all_keys(regmap: RegisterMap) -> list[str]:
    """Keys of a `read=all` answer in map order.

    The seed's example answers "8004":16777216 with no suffix, a value that can't fit 16 bits:
    it is the two registers [256, 0] of product_version, which the vendor's table gives 2
    registers. We follow the table and the register data and report the key as "8004d"; the
    seed's key is taken as a typo.
    """
    return [entry.key for entry in regmap.entries()]
