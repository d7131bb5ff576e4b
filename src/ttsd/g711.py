"""G.711 μ-law and A-law, as ITU-T G.191's reference code (``g711.c``) computes them.

Telephone audio is 8-bit companded samples at 8 kHz. CPython's ``audioop`` (gone in 3.13) and
libsndfile disagree with the ITU reference on the μ-law code of some negative samples at segment
edges (they negate where G.191 takes the one's complement); a phone network decodes either, but a
bot comparing our frames with another G.711 source would see them differ. So the two 65,536-entry
tables are built once from G.191's algorithm, and encoding is one table lookup per sample.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

Codes = npt.NDArray[np.uint8]
Pcm16 = npt.NDArray[np.int16]


def _segments(values: npt.NDArray[np.int32], base: int) -> npt.NDArray[np.int32]:
    """How many times ``values`` halve before they fit under ``base`` (G.191's segment loops)."""
    seg = np.zeros_like(values)
    rest = values >> base
    while rest.any():
        seg += rest != 0
        rest >>= 1
    return seg


@functools.cache
def _ulaw_table() -> Codes:
    x = np.arange(-32768, 32768, dtype=np.int32)
    magnitude = np.minimum(np.where(x < 0, (~x) >> 2, x >> 2) + 33, 0x1FFF)
    segment = _segments(magnitude, 6) + 1
    code = ((8 - segment) << 4) | (0xF - ((magnitude >> segment) & 0xF))
    table: Codes = np.where(x >= 0, code | 0x80, code).astype(np.uint8)
    return table


@functools.cache
def _alaw_table() -> Codes:
    x = np.arange(-32768, 32768, dtype=np.int32)
    magnitude = np.where(x < 0, (~x) >> 4, x >> 4)
    exponent = _segments(magnitude, 5)
    mantissa = np.where(magnitude > 15, (magnitude >> exponent) - 16 + ((exponent + 1) << 4), magnitude)
    code = np.where(x >= 0, mantissa | 0x80, mantissa)
    table: Codes = (code ^ 0x55).astype(np.uint8)
    return table


def _lookup(table: Codes, pcm: Pcm16) -> bytes:
    # Offsetting by 32768 maps int16 onto the table's indices without a sign test per sample.
    coded: bytes = table[pcm.astype(np.int32) + 32768].tobytes()
    return coded


def ulaw(pcm: Pcm16) -> bytes:
    return _lookup(_ulaw_table(), pcm)


def alaw(pcm: Pcm16) -> bytes:
    return _lookup(_alaw_table(), pcm)
