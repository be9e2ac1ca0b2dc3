"""Bit packing of codes: element i occupies bits [i*b, i*b + b) of a little-endian bit stream
(bit p is bit p % 8 of byte p // 8), so 3-bit codes straddle bytes. Matches the LUTDequant contract."""

from __future__ import annotations

import numpy as np

BITS = (2, 3, 4, 8)


def _check(bits: int) -> None:
    if bits not in BITS:
        raise ValueError(f"unsupported bit width {bits} (supported: {BITS})")


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Flat uint8 array of ceil(n * bits / 8) bytes holding the codes in row-major order."""
    _check(bits)
    c = np.asarray(codes).reshape(-1).astype(np.uint8)
    if c.size and int(c.max()) >= 1 << bits:
        raise ValueError(f"code {int(c.max())} does not fit in {bits} bits")
    if bits == 8:
        return c.copy()
    stream = ((c[:, None] >> np.arange(bits, dtype=np.uint8)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(stream, bitorder="little")


def unpack_codes(packed: np.ndarray, bits: int, numel: int) -> np.ndarray:
    """Inverse of pack_codes: the first `numel` codes as uint8."""
    _check(bits)
    p = np.asarray(packed, dtype=np.uint8).reshape(-1)
    if p.size * 8 < numel * bits:
        raise ValueError(f"{p.size} bytes cannot hold {numel} codes of {bits} bits")
    if bits == 8:
        return p[:numel].copy()
    stream = np.unpackbits(p, bitorder="little")[: numel * bits].reshape(numel, bits)
    return (stream << np.arange(bits, dtype=np.uint8)).sum(1, dtype=np.uint8)
