"""Canonical msgpack (ledger.encoding): round trips, one byte form per value, a strict decoder
that fails fast on hostile input (RELIABILITY P2, P4).

The reference for "canonical" is msgpack-python's own packer (``packb(use_bin_type=True)`` over
key-sorted maps): the decoder must accept exactly the byte strings that packer produces for
values in the canonical subset, and nothing else. ``_reference_accepts`` below is that rule
written the naive way (unpack with msgpack, check the subset, re-pack, compare bytes) and
Hypothesis compares it with the real decoder on random and mutated inputs.
"""

from __future__ import annotations

import contextlib
import time
import tracemalloc
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.encoding import MAX_DEPTH, MAX_RECORD_BYTES, decode, encode
from ledger.errors import EncodingError, InputError, TooLargeError

INT_MIN = -(1 << 63)
UINT_MAX = (1 << 64) - 1

# --- strategies ----------------------------------------------------------------------------

ints = st.integers(min_value=INT_MIN, max_value=UINT_MAX)
scalars = st.none() | st.booleans() | ints | st.text(max_size=40) | st.binary(max_size=40)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6)
    | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=40,
)

# Every width boundary of msgpack's integer forms.
INT_EDGES = [
    0, 1, 127, 128, 255, 256, 65535, 65536, (1 << 32) - 1, 1 << 32, UINT_MAX,
    -1, -32, -33, -128, -129, -32768, -32769, -(1 << 31), -(1 << 31) - 1, INT_MIN,
]


def _sorted_deep(value: Any) -> Any:
    """The value with every map's keys in UTF-8 byte order (what msgpack packs in order)."""
    if isinstance(value, dict):
        return {k: _sorted_deep(value[k]) for k in sorted(value, key=lambda k: k.encode())}
    if isinstance(value, list):
        return [_sorted_deep(v) for v in value]
    return value


def _in_subset(value: Any, depth: int = 0) -> bool:
    if depth > MAX_DEPTH:
        return False
    if value is None or isinstance(value, bool | str | bytes):
        return True
    if isinstance(value, int):
        return INT_MIN <= value <= UINT_MAX
    if isinstance(value, list):
        return all(_in_subset(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _in_subset(v, depth + 1) for k, v in value.items())
    return False  # float, ExtType, ...


def _reference_accepts(data: bytes) -> tuple[bool, Any]:
    """Naive rule: msgpack unpacks it, the value is in the subset, and packing the sorted
    value gives back exactly ``data``."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    except Exception:
        return False, None
    if not _in_subset(value):
        return False, None
    try:
        again = msgpack.packb(_sorted_deep(value), use_bin_type=True)
    except Exception:
        return False, None
    return again == data, value


def _decode_or_error(data: bytes) -> tuple[bool, Any]:
    try:
        return True, decode(data)
    except (EncodingError, TooLargeError):
        return False, None


# --- round trips -----------------------------------------------------------------------------


@given(values)
def test_round_trip(value: Any) -> None:
    data = encode(value)
    assert decode(data) == value
    assert encode(decode(data)) == data


@given(values)
def test_encode_matches_msgpack_packer_on_sorted_maps(value: Any) -> None:
    assert encode(value) == msgpack.packb(_sorted_deep(value), use_bin_type=True)


@given(st.dictionaries(st.text(max_size=6), ints, max_size=8), st.randoms())
def test_encoding_ignores_insertion_order(mapping: dict[str, int], rnd: Any) -> None:
    items = list(mapping.items())
    rnd.shuffle(items)
    assert encode(dict(items)) == encode(mapping)


@pytest.mark.parametrize("n", INT_EDGES)
def test_integer_edges_round_trip_in_shortest_form(n: int) -> None:
    data = encode(n)
    assert data == msgpack.packb(n)
    assert decode(data) == n
    assert type(decode(data)) is int


def test_types_are_preserved() -> None:
    assert decode(encode(True)) is True
    assert decode(encode(False)) is False
    assert decode(encode(None)) is None
    assert encode(True) == b"\xc3" and encode(1) == b"\x01"  # bool is not int
    assert type(decode(encode("abc"))) is str
    assert type(decode(encode(b"abc"))) is bytes
    assert encode((1, 2)) == encode([1, 2])  # tuples encode as arrays, decode as lists
    assert decode(encode((1, 2))) == [1, 2]


def test_known_bytes() -> None:
    assert encode({"b": 1, "a": [None, b"\x00", "x"]}) == bytes.fromhex(
        "82" "a161" "93c0c40100a178" "a162" "01"
    )
    assert encode("a" * 32)[:2] == b"\xd9\x20"  # str8 from 32 bytes on
    assert encode(b"")[:2] == b"\xc4\x00"  # bin8 even when empty


def test_map_keys_sort_by_utf8_bytes_not_utf16() -> None:
    # U+FF61 < U+10000 in code points and in UTF-8, but not in UTF-16 (surrogate pairs).
    a, b = "\uff61", "\U00010000"
    data = encode({b: 1, a: 2})
    assert data.index(a.encode()) < data.index(b.encode())
    reversed_order = b"\x82" + msgpack.packb(b) + b"\x01" + msgpack.packb(a) + b"\x02"
    with pytest.raises(EncodingError, match="order"):
        decode(reversed_order)


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = encode({"k": [1, "v"]})
    assert decode(bytearray(data)) == {"k": [1, "v"]}
    assert decode(memoryview(data)) == {"k": [1, "v"]}


# --- decode is exactly the image of encode -------------------------------------------------


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_decode_random_bytes_agrees_with_reference(data: bytes) -> None:
    ok, value = _decode_or_error(data)
    ref_ok, ref_value = _reference_accepts(data)
    assert ok == ref_ok
    if ok:
        assert value == ref_value
        assert encode(value) == data


@st.composite
def mutated_encodings(draw: st.DrawFn) -> bytes:
    data = bytearray(encode(draw(values)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        if op == "insert":
            data.insert(draw(st.integers(0, len(data))), draw(st.integers(0, 255)))
        elif data:
            i = draw(st.integers(0, len(data) - 1))
            if op == "flip":
                data[i] ^= 1 << draw(st.integers(0, 7))
            elif op == "set":
                data[i] = draw(st.integers(0, 255))
            else:
                del data[i]
    return bytes(data)


@settings(max_examples=300)
@given(mutated_encodings())
def test_decode_mutated_encodings_agrees_with_reference(data: bytes) -> None:
    ok, value = _decode_or_error(data)
    ref_ok, ref_value = _reference_accepts(data)
    assert ok == ref_ok
    if ok:
        assert value == ref_value


@settings(max_examples=300)
@given(st.binary(max_size=256))
def test_decode_raises_only_encoding_or_too_large(data: bytes) -> None:
    with contextlib.suppress(EncodingError, TooLargeError):
        decode(data, max_size=128, max_depth=4)


@given(values)
def test_every_strict_prefix_is_refused(value: Any) -> None:
    data = encode(value)
    for cut in range(len(data)):
        with pytest.raises(EncodingError):
            decode(data[:cut])


# --- what decode refuses ---------------------------------------------------------------------


def _h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


REFUSED = {
    # floats and extension types
    "float32": ("ca 3f800000", "float"),
    "float64": ("cb 3ff0000000000000", "float"),
    "float-in-map": ("81 a178 ca3f800000", "float"),
    "fixext1": ("d4 01 00", "extension"),
    "ext8": ("c7 01 01 00", "extension"),
    "fixext16": ("d8 01" + "00" * 16, "extension"),
    "never-used-0xc1": ("c1", "not a type"),
    # map keys
    "int-key": ("81 01 01", "not a string"),
    "nil-key": ("81 c0 01", "not a string"),
    "bin-key": ("81 c40161 01", "not a string"),
    "array-key": ("81 9101 01", "not a string"),
    "duplicate-key": ("82 a161 01 a161 02", "duplicate"),
    "unsorted-keys": ("82 a162 01 a161 02", "order"),
    "shorter-key-second": ("82 a26161 01 a161 02", "order"),
    # integers wider than needed
    "uint8-for-fixint": ("cc 05", "wider"),
    "uint8-for-127": ("cc 7f", "wider"),
    "uint16-for-uint8": ("cd 00ff", "wider"),
    "uint32-for-uint16": ("ce 0000ffff", "wider"),
    "uint64-for-uint32": ("cf 00000000ffffffff", "wider"),
    "int8-for-positive": ("d0 05", "wider"),
    "int8-for-negative-fixint": ("d0 e0", "wider"),
    "int16-for-positive": ("d1 00ff", "wider"),
    "int16-for-int8": ("d1 ff80", "wider"),
    "int32-for-int16": ("d2 ffff8000", "wider"),
    "int64-for-int32": ("d3 ffffffff80000000", "wider"),
    "int64-for-positive": ("d3 0000000000000001", "wider"),
    # length headers wider than needed
    "str8-for-fixstr": ("d9 03 616263", "wider"),
    "str16-for-str8": ("da 0003 616263", "wider"),
    "str32-for-short": ("db 00000003 616263", "wider"),
    "bin16-for-bin8": ("c5 0003 616263", "wider"),
    "bin32-for-bin8": ("c6 00000003 616263", "wider"),
    "array16-for-fixarray": ("dc 0001 01", "wider"),
    "array32-for-fixarray": ("dd 00000001 01", "wider"),
    "map16-for-fixmap": ("de 0001 a161 01", "wider"),
    "map32-for-fixmap": ("df 00000001 a161 01", "wider"),
    # trailing and truncated input
    "trailing-byte": ("01 02", "trailing"),
    "two-values": ("c0 c0", "trailing"),
    "truncated-uint64": ("cf 0001", "truncated"),
    "truncated-str": ("a5 6162", "truncated"),
    "truncated-array": ("93 01 02", "truncated"),
    "truncated-map-value": ("81 a161", "truncated"),
    "truncated-header": ("da 00", "truncated"),
    # str vs bin: text must be UTF-8; bin stays bytes
    "str-invalid-utf8": ("a2 fffe", "UTF-8"),
    "str8-invalid-utf8": ("d9 20" + "ff" * 32, "UTF-8"),
    "str-encoded-surrogate": ("a3 eda080", "UTF-8"),
    "str-overlong-nul": ("a2 c080", "UTF-8"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_decode_refuses(name: str) -> None:
    hexdata, message = REFUSED[name]
    data = _h(hexdata)
    with pytest.raises(EncodingError, match=message):
        decode(data)
    assert not _reference_accepts(data)[0], "the reference rule must agree"


def test_decode_refuses_empty_and_non_bytes() -> None:
    with pytest.raises(EncodingError, match="empty"):
        decode(b"")
    for bad in ("c0", None, 0, [0xC0]):
        with pytest.raises(EncodingError, match="want bytes"):
            decode(bad)  # type: ignore[arg-type]


def test_bin_is_bytes_and_str_is_text() -> None:
    assert decode(_h("c4 03 616263")) == b"abc"
    assert decode(_h("a3 616263")) == "abc"
    assert decode(_h("c4 02 fffe")) == b"\xff\xfe"  # bin may hold anything


def _nested(depth: int) -> bytes:
    """``depth`` one-element arrays around nil: nil sits at depth ``depth``."""
    return b"\x91" * depth + b"\xc0"


def test_nesting_up_to_max_depth_is_accepted() -> None:
    value = decode(_nested(MAX_DEPTH))
    for _ in range(MAX_DEPTH):
        value = value[0]
    assert value is None
    assert encode(decode(_nested(MAX_DEPTH))) == _nested(MAX_DEPTH)


def test_nesting_beyond_max_depth_is_refused() -> None:
    with pytest.raises(EncodingError, match="deeper"):
        decode(_nested(MAX_DEPTH + 1))
    with pytest.raises(EncodingError, match="deeper"):
        decode(b"\x81\xa1k" * (MAX_DEPTH + 1) + b"\xc0")  # maps count too
    with pytest.raises(EncodingError, match="deeper"):
        decode(_nested(3), max_depth=2)
    assert decode(_nested(2), max_depth=2) == [[None]]


def test_very_deep_nesting_fails_fast() -> None:
    start = time.perf_counter()
    with pytest.raises(EncodingError, match="deeper"):
        decode(_nested(200_000))
    assert time.perf_counter() - start < 1.0


def test_encode_refuses_deep_nesting() -> None:
    value: Any = None
    for _ in range(MAX_DEPTH + 1):
        value = [value]
    with pytest.raises(EncodingError, match="deeper"):
        encode(value)
    assert encode(value[0]) == _nested(MAX_DEPTH)


def test_oversize_input_is_refused_before_parsing() -> None:
    with pytest.raises(TooLargeError):
        decode(b"\xc0" * (MAX_RECORD_BYTES + 1))
    with pytest.raises(TooLargeError):
        decode(encode(b"x" * 100), max_size=50)
    big = encode(b"x" * (MAX_RECORD_BYTES - 5))
    assert len(big) == MAX_RECORD_BYTES
    assert decode(big) == b"x" * (MAX_RECORD_BYTES - 5)
    assert issubclass(TooLargeError, InputError)


# --- msgpack bombs: fail fast, allocate nothing like the declared size -----------------------

BOMBS = {
    "array32-4G": "dd ffffffff",
    "map32-4G": "df ffffffff",
    "str32-4G": "db ffffffff",
    "bin32-4G": "c6 ffffffff",
    "array16-64K": "dc ffff 00",
    "map16-64K": "de ffff a161 00",
    "str16-64K": "da ffff 61",
    "bin16-64K": "c5 ffff 61",
    "array-in-map": "81 a161 dd ffffffff",
}


def _peak_bytes(data: bytes) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(EncodingError):
            decode(data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_bomb_with_huge_declared_length_fails_fast(name: str) -> None:
    data = _h(BOMBS[name])
    start = time.perf_counter()
    assert _peak_bytes(data) < 64 * 1024
    assert time.perf_counter() - start < 0.5


def test_nested_array_headers_do_not_reserve_declared_lengths() -> None:
    # 256 KiB of array32 headers, each declaring as many items as there are bytes left:
    # every length is plausible on its own; a decoder that pre-sizes lists (msgpack's
    # Unpacker does) reserves about depth x 256 Ki x 8 bytes before it notices anything.
    size = 256 * 1024
    headers = bytearray()
    while len(headers) < 40 * 5:
        remaining = size - len(headers) - 5
        headers += b"\xdd" + remaining.to_bytes(4, "big")
    data = bytes(headers) + b"\x00" * (size - len(headers))
    start = time.perf_counter()
    assert _peak_bytes(data) < 256 * 1024
    assert time.perf_counter() - start < 0.5


def test_wide_flat_array_is_bounded_by_input() -> None:
    # One array of 100 000 nils: legitimate, decodes, memory proportional to the input.
    data = b"\xdd" + (100_000).to_bytes(4, "big") + b"\xc0" * 100_000
    assert decode(data) == [None] * 100_000


# --- what encode refuses -----------------------------------------------------------------------


class _Custom:
    pass


@pytest.mark.parametrize(
    "value",
    [
        1.5,
        float("nan"),
        {"k": 0.0},
        [1, 2.0],
        complex(1, 2),
        {1, 2},
        frozenset(),
        bytearray(b"x"),
        memoryview(b"x"),
        _Custom(),
        msgpack.ExtType(1, b"x"),
        {1: "int key"},
        {b"k": "bytes key"},
        {None: "nil key"},
        {("t",): "tuple key"},
        {"ok": {2: "nested int key"}},
        1 << 64,
        -(1 << 63) - 1,
        [1 << 70],
        "\ud800",
        {"\udfff": 1},
        ["ok", "bad \udc80 surrogate"],
    ],
    ids=repr,
)
def test_encode_refuses(value: Any) -> None:
    with pytest.raises(EncodingError):
        encode(value)


def test_encode_accepts_the_int_range_edges() -> None:
    assert decode(encode(UINT_MAX)) == UINT_MAX
    assert decode(encode(INT_MIN)) == INT_MIN
