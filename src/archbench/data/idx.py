"""Strict parsing of IDX files (the format of MNIST and Fashion-MNIST).

Layout: two zero bytes, a dtype code, the number of dimensions, then one
big-endian uint32 per dimension, then the values, big-endian, row-major.
Every deviation is a :class:`~archbench.errors.DataError` that names the file,
the offending value and what was expected.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from archbench.errors import DataError

# dtype code -> (numpy big-endian dtype, name)
IDX_DTYPES: dict[int, tuple[str, str]] = {
    0x08: (">u1", "unsigned byte"),
    0x09: (">i1", "signed byte"),
    0x0B: (">i2", "short"),
    0x0C: (">i4", "int"),
    0x0D: (">f4", "float"),
    0x0E: (">f8", "double"),
}

MAX_DIMS = 8


@dataclass(frozen=True)
class IdxHeader:
    dtype_code: int
    shape: tuple[int, ...]

    @property
    def header_bytes(self) -> int:
        return 4 + 4 * len(self.shape)

    @property
    def itemsize(self) -> int:
        return np.dtype(IDX_DTYPES[self.dtype_code][0]).itemsize

    @property
    def payload_bytes(self) -> int:
        return math.prod(self.shape) * self.itemsize


def parse_header(buf: bytes | memoryview, source: str = "<bytes>") -> IdxHeader:
    """Read and check the header of an IDX file held in ``buf``."""
    if len(buf) < 4:
        raise DataError(
            f"{source}: {len(buf)} bytes is too short for an IDX file (the header alone is at "
            "least 8 bytes). The file is truncated or not IDX: delete it and fetch it again "
            "(`archbench data fetch`)."
        )
    zero, code, ndim = struct.unpack(">HBB", bytes(buf[:4]))
    if zero != 0:
        raise DataError(
            f"{source}: magic number 0x{bytes(buf[:4]).hex()} does not start with two zero bytes, "
            "so this is not an uncompressed IDX file (is it still gzip-compressed, or another "
            "format?). Expected e.g. 0x00000803 for images or 0x00000801 for labels."
        )
    if code not in IDX_DTYPES:
        allowed = ", ".join(f"0x{c:02X} ({n})" for c, (_, n) in IDX_DTYPES.items())
        raise DataError(f"{source}: unknown IDX dtype code 0x{code:02X}; allowed: {allowed}.")
    if not 1 <= ndim <= MAX_DIMS:
        raise DataError(
            f"{source}: IDX header declares {ndim} dimensions; expected 1 to {MAX_DIMS}."
        )
    need = 4 + 4 * ndim
    if len(buf) < need:
        raise DataError(
            f"{source}: file is {len(buf)} bytes but its header needs {need} bytes for "
            f"{ndim} dimensions: the file is truncated. Delete it and fetch it again."
        )
    shape = struct.unpack(f">{ndim}I", bytes(buf[4:need]))
    header = IdxHeader(code, tuple(int(d) for d in shape))
    expected = header.header_bytes + header.payload_bytes
    if len(buf) != expected:
        what = "truncated" if len(buf) < expected else "longer than its header says"
        raise DataError(
            f"{source}: file is {len(buf)} bytes but its header (shape {header.shape}, "
            f"{IDX_DTYPES[code][1]}) implies {expected} bytes: the file is {what}. "
            "Delete it and fetch it again (`archbench data fetch`)."
        )
    return header


def parse_idx(buf: bytes | memoryview, source: str = "<bytes>") -> np.ndarray:
    """Parse a whole IDX payload into a native-endian numpy array (a copy)."""
    header = parse_header(buf, source)
    arr = np.frombuffer(buf, dtype=IDX_DTYPES[header.dtype_code][0], offset=header.header_bytes)
    return arr.reshape(header.shape).astype(arr.dtype.newbyteorder("="), copy=True)


def encode_idx(arr: np.ndarray) -> bytes:
    """Serialise ``arr`` as IDX (used by tests and by tools that write datasets)."""
    found = [(code, dt) for code, (dt, _) in IDX_DTYPES.items()
             if np.dtype(dt).newbyteorder("=") == arr.dtype.newbyteorder("=")]
    if not found:
        raise ValueError(f"dtype {arr.dtype} has no IDX code")
    code, dt = found[0]
    if arr.ndim < 1 or arr.ndim > MAX_DIMS:
        raise ValueError(f"IDX holds 1 to {MAX_DIMS} dimensions, not {arr.ndim}")
    head = struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + np.ascontiguousarray(arr, dtype=dt).tobytes()
