"""Vectorised parsing of text columns: hex IDs, hex payloads, decimal timestamps.

Each function takes a numpy array of byte strings (one per row) and returns the parsed values
and a boolean mask of the rows that parsed; the caller reports the first bad row.
"""

from __future__ import annotations

import numpy as np

_NIBBLE = np.full(256, 255, dtype=np.uint8)
for _value, _char in enumerate(b"0123456789abcdef"):
    _NIBBLE[_char] = _value
    _NIBBLE[ord(chr(_char).upper())] = _value


def as_bytes(column, width: int | None = None) -> np.ndarray:
    """A column of str/bytes as a fixed-width numpy bytes array, surrounding spaces removed."""
    array = np.char.strip(np.asarray(column, dtype=f"S{width}" if width else "S"))
    return array


def _nibbles(strings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, width) nibble values (255 where not hex) and the length of each string."""
    width = strings.dtype.itemsize
    if len(strings) == 0 or width == 0:
        return np.zeros((len(strings), max(width, 1)), np.uint8), np.zeros(len(strings), np.int64)
    raw = strings.view(np.uint8).reshape(len(strings), width)
    lengths = np.char.str_len(strings)
    return _NIBBLE[raw], lengths


def parse_hex_ids(strings: np.ndarray, max_digits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Hex CAN IDs (optionally ``0x``-prefixed) → uint32 values and a validity mask."""
    empty = strings == b""
    prefixed = np.char.startswith(strings, b"0x") | np.char.startswith(strings, b"0X")
    if prefixed.any():
        strings = np.where(prefixed, np.char.lstrip(np.char.lstrip(strings, b"0"), b"xX"), strings)
    strings = np.where(strings == b"", b"0", strings)
    nibbles, lengths = _nibbles(strings)
    width = nibbles.shape[1]
    in_string = np.arange(width)[None, :] < lengths[:, None]
    valid = ~empty & (lengths <= max_digits) & ~((nibbles == 255) & in_string).any(axis=1)
    values = np.zeros(len(strings), np.uint64)
    for position in range(width):
        active = in_string[:, position] & valid
        values[active] = values[active] * 16 + nibbles[active, position]
    valid &= values <= 0x1FFFFFFF
    return values.astype(np.uint32), valid


def parse_hex_payload(strings: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One hex string of DLC bytes per row → (payload (n, 8) uint8, dlc uint8, validity mask)."""
    nibbles, lengths = _nibbles(strings)
    n, width = nibbles.shape
    if width < 16:
        nibbles = np.pad(nibbles, ((0, 0), (0, 16 - width)), constant_values=0)
    nibbles = nibbles[:, :16]
    in_string = np.arange(16)[None, :] < lengths[:, None]
    valid = (lengths % 2 == 0) & (lengths <= 16) & ~((nibbles == 255) & in_string).any(axis=1)
    nibbles = np.where(in_string, nibbles, 0)
    payload = (nibbles[:, 0::2].astype(np.uint16) * 16 + nibbles[:, 1::2]).astype(np.uint8)
    return payload, (lengths // 2).astype(np.uint8), valid


def parse_hex_bytes(columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) array of one- or two-digit hex byte strings ('' for absent) → (n, k) uint8 and validity (n, k)."""
    n, k = columns.shape
    flat = columns.reshape(-1).astype("S2")
    nibbles, lengths = _nibbles(flat)
    nibbles = np.pad(nibbles, ((0, 0), (0, max(0, 2 - nibbles.shape[1]))))
    one = lengths == 1
    high = np.where(one, 0, nibbles[:, 0])
    low = np.where(one, nibbles[:, 0], nibbles[:, 1])
    valid = (lengths > 0) & (high != 255) & (low != 255)
    values = np.where(valid, high.astype(np.uint16) * 16 + low, 0).astype(np.uint8)
    return values.reshape(n, k), valid.reshape(n, k)


_NUMBER_CHARS = np.zeros(256, dtype=bool)
_NUMBER_CHARS[list(b"0123456789.eE+-_ \t\r\n\x0b\x0c")] = True  # all float() may accept in a finite number


def parse_floats(strings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decimal numbers → float64 and validity (NaN and infinities are invalid)."""
    try:
        values = strings.astype(np.float64)
    except ValueError:
        # some text is no number: only strings of number characters can be finite numbers, and
        # only those are converted one by one (a file of garbage would cost a Python call per row)
        values = np.full(len(strings), np.nan)
        raw = np.ascontiguousarray(strings).view(np.uint8).reshape(len(strings), -1)
        digit = (raw >= ord("0")) & (raw <= ord("9"))
        plausible = np.flatnonzero((_NUMBER_CHARS[raw] | (raw == 0)).all(axis=1) & digit.any(axis=1))
        values[plausible] = [_float_or_nan(s) for s in strings[plausible]]
    return values, np.isfinite(values)


def _float_or_nan(text: bytes) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")
