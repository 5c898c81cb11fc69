"""Writers of text captures, and the vectorised formatting they are built from.

``write_csv`` writes the ctt layout, ``write_candump`` a candump log; ``format_fixed``,
``format_hex``, ``format_uint``, ``format_payload`` and ``join_rows`` turn numpy columns into
fixed-width text columns without a Python loop per frame (the benchmarks and tests write the
other layouts with them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdcore.atomic import atomic_open
from kdcore.data.formats.ctt import HEADER
from kdcore.data.frames import FrameTable

_U64 = np.uint64

_HEX_UPPER = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)
_HEX_LOWER = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _as_strings(chars: np.ndarray, lead: np.ndarray | None = None) -> np.ndarray:
    """(n, w) uint8 characters → ``S<w>`` array; ``lead``: how many leading characters of each row to drop."""
    n, w = chars.shape
    if n == 0:
        return np.zeros(0, dtype=f"S{max(w, 1)}")
    if lead is not None and lead.any():
        offsets = np.arange(w)[None, :] + lead[:, None]
        chars = np.take_along_axis(chars, np.minimum(offsets, w - 1), axis=1)
        chars[offsets >= w] = 0
    return np.ascontiguousarray(chars).view(f"S{w}").reshape(-1)


def format_uint(values: np.ndarray, min_digits: int = 1) -> np.ndarray:
    """Non-negative integers → decimal ``S`` array, zero-padded to ``min_digits``."""
    values = np.asarray(values, dtype=np.uint64)
    digits = max(min_digits, len(str(int(values.max(initial=0)))))
    powers = np.uint64(10) ** np.arange(digits - 1, -1, -1, dtype=np.uint64)
    chars = ((values[:, None] // powers) % np.uint64(10)).astype(np.uint8) + np.uint8(ord("0"))
    needed = np.maximum((values[:, None] >= powers).sum(axis=1), max(min_digits, 1))
    return _as_strings(chars, digits - needed)


def format_fixed(values: np.ndarray, decimals: int = 6) -> np.ndarray:
    """Floats → ``S`` array with exactly ``decimals`` digits after the point (``%.6f``), no Python loop."""
    values = np.asarray(values, dtype=np.float64)
    scaled = np.round(np.abs(values) * 10.0**decimals).astype(np.uint64)
    whole, part = np.divmod(scaled, np.uint64(10**decimals))
    text = np.char.add(np.char.add(format_uint(whole), b"."), format_uint(part, decimals)) if decimals else format_uint(whole)
    negative = values < 0
    return np.where(negative, np.char.add(b"-", text), text) if negative.any() else text


def format_hex(values: np.ndarray, digits: int, upper: bool = True) -> np.ndarray:
    """Integers → hex ``S<digits>`` array, zero-padded to ``digits``."""
    values = np.asarray(values, dtype=np.uint64)
    shifts = np.uint64(4) * np.arange(digits - 1, -1, -1, dtype=np.uint64)
    nibbles = ((values[:, None] >> shifts) & np.uint64(15)).astype(np.intp)
    table = _HEX_UPPER if upper else _HEX_LOWER
    return np.ascontiguousarray(table[nibbles]).view(f"S{digits}").reshape(-1)


def format_payload(payload: np.ndarray, dlc: np.ndarray, separator: bytes = b"", upper: bool = True) -> np.ndarray:
    """The first ``dlc`` bytes of each payload row as hex, bytes joined by ``separator`` (b"" or one byte)."""
    table = _HEX_UPPER if upper else _HEX_LOWER
    n = len(payload)
    step = 2 + len(separator)
    chars = np.zeros((n, 8, step), dtype=np.uint8)
    chars[:, :, 0] = table[payload >> 4]
    chars[:, :, 1] = table[payload & 15]
    if separator:
        chars[:, :, 2] = separator[0]
    present = np.arange(8)[None, :] < np.asarray(dlc)[:, None]
    chars[~present] = 0
    chars = chars.reshape(n, 8 * step)
    if separator:  # no separator after the last byte
        last = np.asarray(dlc, dtype=np.int64) * step - 1
        rows = np.flatnonzero(last >= 0)
        chars[rows, last[rows]] = 0
    return _as_strings(chars)


def join_rows(columns, separators) -> bytes:
    """Text rows from ``S`` columns joined by ``separators`` (one fewer than columns), newline-terminated."""
    row = columns[0]
    for separator, column in zip(separators, columns[1:]):
        row = np.char.add(np.char.add(row, separator), column)
    return b"\n".join(row.tolist()) + b"\n" if len(row) else b""


def write_candump(table: FrameTable, path: str | Path, interface: str = "can0") -> None:
    """Write frames as a candump log (``(timestamp) interface ID#DATA``), atomically, for
    replaying with ``canplayer``.

    Extended IDs are written with 8 digits, standard ones with 3; a remote frame as ``ID#R`` (or
    ``ID#R<DLC>``). Labels are not written (candump has no label column): keep them in an attack
    sidecar if needed.
    """
    can_id = np.asarray(table.can_id, dtype=np.uint64)
    ids = np.where(table.extended, format_hex(can_id, 8), format_hex(can_id, 3))
    timestamps = np.char.add(b"(", format_fixed(table.timestamp, 6))
    data = format_payload(table.payload, table.dlc)
    remote = np.where(table.dlc > 0, np.char.add(b"R", format_uint(table.dlc)), b"R")
    data = np.where(table.remote, remote, data)
    text = join_rows([timestamps, ids, data], [f") {interface} ".encode(), b"#"])
    with atomic_open(path, "wb") as handle:
        handle.write(text)


def write_csv(table: FrameTable, path: str | Path) -> None:
    """Write frames in the ctt CSV layout, atomically.

    Rows are ``%.6f`` timestamp, ``%03X`` ID, the DLC bytes in upper-case hex and the label, built
    as one character matrix (short fields padded with NULs, which are then dropped).
    """
    n = len(table)
    text = b""
    if n:
        columns = [
            _timestamp_chars(table.timestamp),
            _char(b","),
            _id_chars(table.can_id),
            _char(b","),
            _payload_chars(table.payload, table.dlc),
            _char(b","),
            _uint_chars(table.label),
            _char(b"\n"),
        ]
        rows = np.concatenate([np.broadcast_to(column, (n, column.shape[1])) for column in columns], axis=1).reshape(-1)
        text = rows[rows != 0].tobytes()
    with atomic_open(path, "wb") as handle:
        handle.write((HEADER + "\n").encode() + text)


_HEX_PAIRS = np.frombuffer(bytes.hex(bytes(range(256))).upper().encode(), dtype=np.uint16)  # byte → its two hex digits
_DECIMAL_QUADS = np.frombuffer("".join(f"{i:04d}" for i in range(10000)).encode(), dtype=np.uint8).reshape(10000, 4)


def _char(char: bytes) -> np.ndarray:
    return np.frombuffer(char, dtype=np.uint8).reshape(1, 1)


def _uint_chars(values: np.ndarray, min_digits: int = 1) -> np.ndarray:
    """Non-negative integers as (n, d) decimal characters, leading zeros (past ``min_digits``) as NULs."""
    values = np.asarray(values, dtype=np.uint64)
    digits = max(min_digits, len(str(int(values.max(initial=0)))))
    quads = []
    rest = values
    for _ in range(-(-digits // 4)):  # four digits at a time, from the right
        rest, quad = np.divmod(rest, _U64(10000))
        quads.append(quad)
    chars = _DECIMAL_QUADS[np.stack(quads[::-1], axis=1).astype(np.intp)].reshape(len(values), -1)[:, -digits:]
    if digits > min_digits:
        powers = _U64(10) ** np.arange(digits - 1, min_digits - 1, -1, dtype=np.uint64)
        leading = values[:, None] < powers  # a zero in front of the number's first digit
        chars[:, : digits - min_digits][leading] = 0
    return chars


def _id_chars(can_id: np.ndarray) -> np.ndarray:
    """``%03X`` of each ID as (n, 8) characters, NUL-padded in front."""
    values = np.asarray(can_id, dtype=np.uint32)
    chars = _HEX_PAIRS[values.astype(">u4").view(np.uint8).reshape(-1, 4)].view(np.uint8).reshape(-1, 8)
    limits = np.uint32(16) ** np.arange(7, 2, -1, dtype=np.uint32)  # 16**7 ... 16**3
    chars[:, :5][values[:, None] < limits] = 0
    return chars


def _payload_chars(payload: np.ndarray, dlc: np.ndarray) -> np.ndarray:
    """The first ``dlc`` bytes of each payload as (n, 16) upper-case hex characters, NUL-padded."""
    chars = _HEX_PAIRS[np.asarray(payload, dtype=np.uint8)]
    chars[np.arange(8)[None, :] >= np.asarray(dlc)[:, None]] = 0
    return chars.view(np.uint8).reshape(len(chars), 16)


def _timestamp_chars(timestamp: np.ndarray) -> np.ndarray:
    """``%.6f`` of each timestamp as (n, w) characters, NUL-padded.

    Vectorised where ``round(t * 1e6)`` is certainly Python's rounding (non-negative, below 2**53
    micro-units, the product not within its rounding error of a half); ``format`` for the rest.
    """
    t = np.asarray(timestamp, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        micro = t * 1e6
        fraction = micro - np.floor(micro)
        fast = np.isfinite(t) & ~np.signbit(t) & (micro < 2.0**53) & (np.abs(fraction - 0.5) > micro * 2.0**-52)
    scaled = np.round(np.where(fast, micro, 0.0)).astype(np.uint64)
    whole, part = np.divmod(scaled, _U64(1_000_000))
    chars = np.concatenate((_uint_chars(whole), _char(b".").repeat(len(t), axis=0), _uint_chars(part, 6)), axis=1)
    slow = np.flatnonzero(~fast)
    if len(slow):
        text = np.array([f"{value:.6f}".encode() for value in t[slow].tolist()], dtype="S")
        width = max(chars.shape[1], text.dtype.itemsize)
        wide = np.zeros((len(t), width), np.uint8)
        wide[:, width - chars.shape[1] :] = chars  # NULs in front vanish like padding behind
        wide[slow] = 0
        wide[slow, : text.dtype.itemsize] = np.ascontiguousarray(text).view(np.uint8).reshape(len(slow), -1)
        chars = wide
    return chars
