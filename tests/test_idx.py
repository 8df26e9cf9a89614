import contextlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archbench.data.idx import encode_idx, parse_header, parse_idx
from archbench.errors import DataError


def test_roundtrip_every_dtype():
    for dt in (np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64):
        arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dt)
        back = parse_idx(encode_idx(arr))
        assert back.dtype == np.dtype(dt)
        np.testing.assert_array_equal(back, arr)


def test_big_endian_values_are_decoded():
    raw = struct.pack(">HBB", 0, 0x0B, 1) + struct.pack(">I", 2) + struct.pack(">hh", 258, -2)
    np.testing.assert_array_equal(parse_idx(raw), [258, -2])


def test_header_of_images():
    raw = encode_idx(np.zeros((5, 28, 28), np.uint8))
    assert raw[:4] == b"\x00\x00\x08\x03"
    h = parse_header(raw)
    assert h.shape == (5, 28, 28) and h.payload_bytes == 5 * 784 and h.header_bytes == 16


@pytest.mark.parametrize("raw, words", [
    (b"\x00\x00", "too short"),
    (b"\x1f\x8b\x08\x00" + bytes(12), "gzip"),
    (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "dtype code 0x07"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 3) + b"\x01\x02", "truncated"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 1) + b"\x01\x02", "longer than its header"),
])
def test_malformed_files_are_named_errors(raw, words):
    with pytest.raises(DataError) as err:
        parse_idx(raw, "some-file")
    assert "some-file" in str(err.value)
    assert words in str(err.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_parse_or_raise_data_error(raw):
    try:
        arr = parse_idx(raw)
    except DataError:
        return
    assert arr.size * arr.itemsize + 4 + 4 * arr.ndim == len(raw)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=4, max_size=8).map(lambda b: b"\x00\x00" + b[2:]), st.binary(max_size=40))
def test_arbitrary_headers_with_zero_magic(head, rest):
    with contextlib.suppress(DataError):
        parse_idx(head + rest)
