"""The cmd=modbus register codec against the API document's examples."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridges.modbus import sdm630_map as sdm
from bridges.modbus.powerbrain_map import POWERBRAIN_EVSE_MAP, POWERBRAIN_METER_MAP
from bridges.modbus.register_map import (
    BAD_ADDRESS,
    BAD_SIZE,
    BAD_VALUE,
    READ_ONLY,
    UNKNOWN_REGISTER,
    RegisterEntry,
    RegisterError,
    RegisterMap,
    Suffix,
    check_count_read,
    check_read,
    check_write,
    decode,
    decode_int,
    decode_kind,
    encode,
    parse_address,
    read_all_keys,
)

# The seed's `device=meter2&read=all` answer, with 8004 keyed "8004d" (see read_all_keys).
READ_ALL_EXAMPLE: dict[str, int | str] = {
    "8000d": -821755904, "8002": 1, "8003": 257, "8004d": 16777216, "8006": 256, "8007": 0,
    "8008s": "fcf5-c46d-310c", "8016s": "cFos Power Brain", "8040": 41, "8041": 1,
    "8042d": 1000, "8044": 1, "8045": 230, "8046": 230, "8047": 230, "8050q": 0, "8054d": 0,
    "8056": 0, "8057": 0, "8058q": 0, "8062d": -1, "8064d": 0, "8066d": 0, "8068d": 0,
    "8070": 0, "8071": 0, "8120d": 0,
}


def _words_of_example() -> dict[int, int]:
    words: dict[int, int] = {}
    for key, value in READ_ALL_EXAMPLE.items():
        address, suffix = parse_address(key)
        entry = POWERBRAIN_METER_MAP.entry_at(address)
        assert entry is not None
        for i, word in enumerate(encode(suffix, value, count=entry.count)):
            words[address + i] = word
    return words


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8062d", (8062, "d")), ("8002", (8002, "")), ("8050q", (8050, "q")),
     ("8016s", (8016, "s")), (" 8044 ", (8044, "")), ("8044D", (8044, "d"))],
)
def test_parse_address(text: str, expected: tuple[int, str]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "d", "80x2", "8002x", "-1", "65536", "8002dd", "1.5"])
def test_parse_address_refuses_junk(text: str) -> None:
    with pytest.raises(RegisterError, match=BAD_ADDRESS):
        parse_address(text)


def test_single_read_examples() -> None:
    assert decode("", [1]) == 1  # read=8002
    assert decode("d", [0xFFFF, 0xFFFF]) == -1  # read=8062d
    name = encode("s", "cFos Power Brain", count=16)
    assert len(name) == 16
    assert decode("s", name) == "cFos Power Brain"  # read=8016s


def test_count_read_example_spans_entries_as_plain_registers() -> None:
    words = _words_of_example()
    assert check_count_read(8002, 10) == 10
    assert [words[a] for a in range(8002, 8012)] == [
        1, 257, 256, 0, 256, 0, 26211, 26165, 11619, 13366
    ]


def test_read_all_keys_match_the_example() -> None:
    assert read_all_keys(POWERBRAIN_METER_MAP) == list(READ_ALL_EXAMPLE)


def test_read_all_values_decode_back() -> None:
    words = _words_of_example()
    for key, value in READ_ALL_EXAMPLE.items():
        address, suffix = parse_address(key)
        count = check_read(POWERBRAIN_METER_MAP, address, suffix)
        assert decode(suffix, [words[address + i] for i in range(count)]) == value, key


def test_vendor_id_is_signed_as_d_but_unsigned_by_kind() -> None:
    assert decode("d", [0xCF05, 0]) == -821755904
    assert decode_kind("u32", [0xCF05, 0]) == 0xCF05_0000
    assert encode("d", 0xCF05_0000) == encode("d", -821755904) == [0xCF05, 0]
    assert decode_kind("i16", [0xFFFF]) == -1


def test_write_examples_on_the_evse() -> None:
    assert check_write(POWERBRAIN_EVSE_MAP, 8044, "") == 1  # write=8044&value=7
    assert check_write(POWERBRAIN_EVSE_MAP, 8050, "q") == 4  # write=8050q&value=1
    assert encode("q", 1) == [0, 0, 0, 1]
    with pytest.raises(RegisterError) as refused:  # write=8044d&value=1
        check_write(POWERBRAIN_EVSE_MAP, 8044, "d")
    assert str(refused.value) == "bad modbus register size"
    # write=8044&values=[7,230,230,230]: consecutive 16-bit registers 8044..8047
    assert check_write(POWERBRAIN_EVSE_MAP, 8044, "", n_values=4) == 4
    assert [w for v in (7, 230, 230, 230) for w in encode("", v)] == [7, 230, 230, 230]


@pytest.mark.parametrize(
    ("address", "suffix", "n_values", "message"),
    [
        (8092, "", 1, READ_ONLY),  # status
        (8000, "d", 1, READ_ONLY),  # vendor id
        (8058, "", 1, BAD_SIZE),  # energy is 64-bit
        (8016, "", 1, BAD_SIZE),  # a string is written as a string
        (8042, "", 3, None),  # 8042d + 8044 exactly
        (8042, "", 1, BAD_SIZE),
        (8045, "", 4, UNKNOWN_REGISTER),  # runs into the gap at 8048
        (8050, "", 3, BAD_SIZE),  # stops inside pulses
        (8045, "d", 2, BAD_SIZE),  # values are 16-bit each
        (9000, "", 1, UNKNOWN_REGISTER),
        (8043, "", 1, UNKNOWN_REGISTER),  # inside pulsesperkwh
    ],
)
def test_write_rules(address: int, suffix: Suffix, n_values: int, message: str | None) -> None:
    if message is None:
        check_write(POWERBRAIN_EVSE_MAP, address, suffix, n_values)
        return
    with pytest.raises(RegisterError) as refused:
        check_write(POWERBRAIN_EVSE_MAP, address, suffix, n_values)
    assert str(refused.value) == message


def test_evse_registers_writable_by_a_load_manager() -> None:
    for address in (8093, 8094, 8087, 8086):
        assert check_write(POWERBRAIN_EVSE_MAP, address, "") == 1


@pytest.mark.parametrize(
    ("address", "suffix", "expected"),
    [(8062, "d", 2), (8016, "s", 16), (8096, "s", 15), (8063, "", 1), (9999, "d", 2),
     (9999, "q", 4), (8064, "d", 2)],
)
def test_read_sizes(address: int, suffix: Suffix, expected: int) -> None:
    assert check_read(POWERBRAIN_EVSE_MAP, address, suffix) == expected


@pytest.mark.parametrize(("address", "suffix"), [(8062, ""), (8044, "d"), (9999, "s"),
                                                 (8002, "s"), (8016, "")])
def test_read_size_mismatch(address: int, suffix: Suffix) -> None:
    with pytest.raises(RegisterError, match=BAD_SIZE):
        check_read(POWERBRAIN_EVSE_MAP, address, suffix)


@pytest.mark.parametrize("count", [0, 126])
def test_count_read_limits(count: int) -> None:
    with pytest.raises(RegisterError, match=BAD_SIZE):
        check_count_read(8000, count)


@pytest.mark.parametrize(
    ("suffix", "value"),
    [("", 65536), ("", -32769), ("d", 1 << 32), ("q", -(1 << 63) - 1), ("", True), ("s", 5),
     ("", "7")],
)
def test_encode_out_of_range(suffix: Suffix, value: int | str) -> None:
    with pytest.raises(RegisterError, match=BAD_VALUE):
        encode(suffix, value)


def test_encode_string_limits() -> None:
    with pytest.raises(RegisterError, match=BAD_VALUE):
        encode("s", "x" * 31, count=15)
    with pytest.raises(RegisterError, match=BAD_VALUE):
        encode("s", "Grüße", count=15)
    assert encode("s", "abc") == [0x6162, 0x6300]


def test_decode_int() -> None:
    assert decode_int("q", [0, 0, 1, 2]) == 0x10002
    with pytest.raises(RegisterError, match=BAD_SIZE):
        decode_int("s", [0x6162])


def test_decode_wrong_length_and_bad_words() -> None:
    with pytest.raises(RegisterError, match=BAD_SIZE):
        decode("d", [1])
    with pytest.raises(RegisterError, match=BAD_VALUE):
        decode("", [0x10000])


def test_map_refuses_overlaps_and_bad_entries() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        RegisterMap([RegisterEntry(10, 2, "u32", "a", False),
                     RegisterEntry(11, 1, "u16", "b", False)])
    with pytest.raises(ValueError, match="needs 2"):
        RegisterEntry(10, 1, "i32", "c", False)


def test_entries_are_ordered_and_findable() -> None:
    entries = POWERBRAIN_EVSE_MAP.entries()
    assert [e.address for e in entries] == sorted(e.address for e in entries)
    entry = POWERBRAIN_EVSE_MAP.entry_at(8093)
    assert entry is not None and entry.name == "charging_cur_limit" and entry.writable
    assert POWERBRAIN_EVSE_MAP.entry_at(8005) is None  # the low word of 8004d
    assert POWERBRAIN_EVSE_MAP.entry_covering(8005) == POWERBRAIN_EVSE_MAP.entry_at(8004)
    assert POWERBRAIN_METER_MAP.entry_at(8093) is None


@given(st.integers(0, 0xFFFF))
def test_u16_round_trip(value: int) -> None:
    assert decode("", encode("", value)) == value


@given(st.integers(-(1 << 31), (1 << 31) - 1))
def test_d_round_trip(value: int) -> None:
    words = encode("d", value)
    assert len(words) == 2 and all(0 <= w <= 0xFFFF for w in words)
    assert decode("d", words) == value


@given(st.integers(-(1 << 63), (1 << 63) - 1))
def test_q_round_trip(value: int) -> None:
    assert decode("q", encode("q", value)) == value


@given(st.integers(1 << 31, (1 << 32) - 1))
def test_unsigned_d_writes_read_back_signed(value: int) -> None:
    assert decode("d", encode("d", value)) == value - (1 << 32)


@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=4).filter(lambda w: len(w) != 3))
def test_words_round_trip(words: list[int]) -> None:
    suffix: Suffix = {1: "", 2: "d", 4: "q"}[len(words)]  # type: ignore[assignment]
    value = decode(suffix, words)
    assert isinstance(value, int)
    assert encode(suffix, value) == words


@given(st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=30))
def test_string_round_trip(text: str) -> None:
    words = encode("s", text, count=15)
    assert len(words) == 15
    assert decode("s", words) == text


@given(st.floats(width=32, allow_nan=False))
def test_sdm630_float_round_trip(value: float) -> None:
    assert sdm.decode_float32(*sdm.encode_float32(value)) == value


def test_sdm630_float_layout() -> None:
    assert sdm.encode_float32(230.0) == (0x4366, 0x0000)
    assert math.isclose(sdm.float_at([0, 0, 0x4366, 0], 2, start=0), 230.0)
