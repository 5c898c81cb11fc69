"""``ctt``: the can-train-and-test CSV layout (hcrl_ch, hcrl_sa, set_01 … set_04).

``timestamp,arbitration_id,data_field,attack``: ID in hex, payload one hex string of DLC bytes,
attack 0/1. A dataset is a folder of ``train_01_attack_free/``, ``train_02_with_attacks/`` and
``test_0N_<name>/`` subfolders of such files (see ``kdcore.data.ctt_dataset``).

The reader and the writer are vectorised (``kdcore.data.formats.textscan``): no Python object is
made per frame. A row is its line cut at every comma (empty fields count: a row needs exactly three
commas), each field stripped of surrounding whitespace; blank lines are not rows. Bad rows are
reported in line order, the first problem of each row (fields, timestamp, ID, payload, attack).
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import numpy as np

from kdcore.atomic import atomic_open
from kdcore.data.formats import textscan
from kdcore.data.formats.base import CaptureFormat
from kdcore.data.formats.hexparse import as_bytes, parse_floats, parse_hex_ids, parse_hex_payload
from kdcore.data.formats.textscan import Lines, read_lines, split_lines
from kdcore.data.frames import NORMAL, BadRowError, FrameTable, RowErrors

HEADER = "timestamp,arbitration_id,data_field,attack"
_BOM_CHARS = b"\xef\xbb\xbf"  # stripped from the start of the file as a set, like bytes.lstrip
_SPACE = np.zeros(256, dtype=bool)
_SPACE[list(b" \t\n\r\x0b\x0c")] = True  # what bytes.strip() removes
_STRIP_STEPS = 8  # whitespace runs longer than this are stripped one field at a time
# per-row problems, in the order a row is checked (a row keeps its first)
_FIELDS, _TIMESTAMP, _ID, _DATA, _ATTACK = 1, 2, 3, 4, 5
_PROBLEMS = {
    _TIMESTAMP: ("timestamp", "not a number"),
    _ID: ("arbitration_id", "not a hex CAN ID"),
    _DATA: ("data_field", "not a hex payload of 0-8 bytes"),
    _ATTACK: ("attack", "expected 0 or 1"),
}


class CttCsv(CaptureFormat):
    name = "ctt"
    priority = 50
    description = "can-train-and-test CSV: timestamp,arbitration_id,data_field,attack"
    suffixes = (".csv",)
    carries_labels = True

    def sniff(self, head: bytes, path: Path) -> bool:
        return head.lstrip(b"\xef\xbb\xbf").split(b"\n", 1)[0].strip().lower() == HEADER.encode()

    def read(self, path: Path, errors: RowErrors) -> FrameTable:
        lines = _split_like_splitlines(read_lines(path))
        first = lines.buf[: lines.end[0]].tobytes() if len(lines) else b""  # line 1 with its BOM
        if not len(lines) or first.lstrip(_BOM_CHARS).strip().lower() != HEADER.encode():
            raise BadRowError(f"{path}:1: header: expected {HEADER!r}")
        name = attack_name(path)
        rows_seen = False

        def read_chunk(chunk: Lines) -> FrameTable:
            nonlocal rows_seen
            table = _read_lines(chunk, errors, name)
            if table is None:
                return FrameTable.empty()
            rows_seen = True
            return table

        table = textscan.read_chunks(lines.take(slice(1, None)), read_chunk, errors)
        if not rows_seen:  # no line with four fields: a plain empty table, as before
            table = attrs.evolve(FrameTable.empty(), bad_rows=errors.skipped)
        return table


def _split_like_splitlines(lines: Lines) -> Lines:
    """``bytes.splitlines`` also ends a line at a lone CR: turn those into newlines and split again."""
    size = len(lines.buf) - textscan.PAD
    carriage = np.flatnonzero(lines.buf[:size] == 13)
    if len(carriage) == 0:
        return lines
    lone = carriage[lines.buf[carriage + 1] != 10]  # the pad after the text is newlines
    if len(lone) == 0:
        return lines
    data = lines.buf[:size].copy()
    data[lone] = 10
    return split_lines(data.tobytes())


def _strip(buf: np.ndarray, start: np.ndarray, end: np.ndarray) -> None:
    """Move ``start``/``end`` (in place) past the whitespace around each span, as ``bytes.strip``."""
    for step in (1, -1):
        edge = start if step == 1 else end - 1
        rows = np.flatnonzero((end > start) & _SPACE[buf[np.maximum(edge, 0)]])
        for _ in range(_STRIP_STEPS):
            if len(rows) == 0:
                break
            if step == 1:
                start[rows] += 1
                edge = start[rows]
            else:
                end[rows] -= 1
                edge = end[rows] - 1
            rows = rows[(end[rows] > start[rows]) & _SPACE[buf[np.maximum(edge, 0)]]]
        for i in rows:  # long runs of whitespace: let bytes.strip find their length
            text = buf[start[i] : end[i]].tobytes()
            if step == 1:
                start[i] += len(text) - len(text.lstrip())
            else:
                end[i] -= len(text) - len(text.rstrip())


# --- the fast path: fields read eight bytes at a time -------------------------------------------
#
# ``words[i]`` is ``buf[i:i+8]`` as a little-endian uint64 (a byte-strided view, no copy), so one
# gather loads a field's characters; bytes outside the field are masked to ``'0'``. The fast path
# accepts a field only when every character is a digit (hex digit), so anything unusual (spaces,
# a ``0x`` prefix, signs, exponents, NULs ...) falls through to the exact parsers, which see the
# field as the old column-wise reader did.

_U64 = np.uint64
_ZEROS = _U64(0x3030303030303030)  # "00000000"
_HIGH_NIBBLES = _U64(0xF0F0F0F0F0F0F0F0)
_SIXES = _U64(0x0606060606060606)
# keep the last m bytes of a word (a right-aligned field of m characters) / the first m bytes
_KEEP_LAST = np.array([0] + [(1 << 64) - (1 << (8 * (8 - m))) for m in range(1, 9)], dtype=np.uint64)
_KEEP_FIRST = np.array([(1 << (8 * m)) - 1 for m in range(9)], dtype=np.uint64)
_POW10_INT = np.array([10**k for k in range(20)], dtype=np.uint64)
_POW10_FLOAT = np.array([float(10**k) for k in range(23)])  # exact: 10**22 is the last exact power
_NIBBLE = np.full(256, 255, dtype=np.uint8)
for _value, _char in enumerate(b"0123456789abcdef"):
    _NIBBLE[_char] = _value
    _NIBBLE[ord(chr(_char).upper())] = _value
_FAST_DIGITS = 17  # integer and fraction digits together: below 2**64, and checked against 2**53


def _words(buf: np.ndarray) -> np.ndarray:
    return np.ndarray((len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))


def _masked(word: np.ndarray, keep: np.ndarray) -> np.ndarray:
    return (word & keep) | (_ZEROS & ~keep)


def _decimal8(word: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The kept bytes of each word as decimal digits (others '0'): values and whether all were digits."""
    v = _masked(word, keep)
    ok = ((v & _HIGH_NIBBLES) == _ZEROS) & (((v + _SIXES) & _HIGH_NIBBLES) == _ZEROS)
    # eight digits to their value in three multiply-shift steps (pairs, quads, the whole word)
    v = ((v & _U64(0x0F0F0F0F0F0F0F0F)) * _U64(2561)) >> _U64(8)
    v = ((v & _U64(0x00FF00FF00FF00FF)) * _U64(6553601)) >> _U64(16)
    v = ((v & _U64(0x0000FFFF0000FFFF)) * _U64(42949672960001)) >> _U64(32)
    return v, ok


def _digits(words: np.ndarray, end: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The decimal numbers of ``length`` (0-16) digits ending at ``end``, and whether they are all digits."""
    low = np.minimum(length, 8)
    value, ok = _decimal8(words[np.maximum(end - 8, 0)], _KEEP_LAST[low])
    ok &= (end >= 8) | (low == 0)
    high = np.clip(length - 8, 0, 8)
    if high.any():
        upper, ok_upper = _decimal8(words[np.maximum(end - 16, 0)], _KEEP_LAST[high])
        value += upper * _U64(10**8)
        ok &= ok_upper & ((end >= 16) | (high == 0))
    ok &= length <= 16
    return value, ok


def _fast_timestamps(words, start, end, dots):
    """``[digits][.digits]`` → float64 as ``float()`` gives it: M / 10**k, exact when M < 2**53."""
    if len(dots) == len(start) and ((dots >= start) & (dots < end)).all():
        dot, has_dot = dots, True  # one '.' per row, in its timestamp: the usual file
    else:
        at = np.searchsorted(dots, start)
        dot = dots[np.minimum(at, len(dots) - 1)] if len(dots) else end
        has_dot = (at < len(dots)) & (dot < end)
        dot = np.where(has_dot, dot, end)
    whole = dot - start
    fraction = np.where(has_dot, end - dot - 1, 0)
    integer, ok = _digits(words, dot, whole)
    decimals, ok_decimals = _digits(words, end, fraction)
    digits = whole + fraction
    ok &= ok_decimals & (digits >= 1) & (digits <= _FAST_DIGITS)
    mantissa = integer * _POW10_INT[np.minimum(fraction, 19)] + decimals
    ok &= mantissa <= _U64(2**53)
    return mantissa.astype(np.float64) / _POW10_FLOAT[np.minimum(fraction, 22)], ok


def _fast_ids(words, start, end):
    """1-8 hex digits → uint32 CAN IDs (at most 29 bits) and validity."""
    length = end - start
    chars = _masked(words[np.maximum(end - 8, 0)], _KEEP_LAST[np.minimum(length, 8)]).view(np.uint8).reshape(-1, 8)
    nibbles = _NIBBLE[chars]
    ok = (nibbles != 255).all(axis=1) & (length >= 1) & (length <= 8) & (end >= 8)
    can_id = ((nibbles[:, 0::2] << 4) | nibbles[:, 1::2]).view(">u4").reshape(-1).astype(np.uint32)
    return can_id, ok & (can_id <= 0x1FFFFFFF)


def _fast_payloads(words, start, end):
    """An even number (0-16) of hex digits → (n, 8) payload, DLC and validity."""
    length = end - start
    n = len(start)
    halves = np.empty((n, 2), dtype="<u8")
    halves[:, 0] = _masked(words[start], _KEEP_FIRST[np.minimum(length, 8)])
    halves[:, 1] = _masked(words[start + 8], _KEEP_FIRST[np.clip(length - 8, 0, 8)])
    nibbles = _NIBBLE[halves.view(np.uint8).reshape(n, 16)]
    ok = (nibbles != 255).all(axis=1) & (length % 2 == 0) & (length <= 16)
    payload = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
    return payload, (np.minimum(length, 16) // 2).astype(np.uint8), ok


@attrs.define
class _Columns:
    """Parsed fields of every row and whether each parsed; ``shown``: exact field texts for messages."""

    timestamp: np.ndarray
    ok_time: np.ndarray
    can_id: np.ndarray
    ok_id: np.ndarray
    payload: np.ndarray
    dlc: np.ndarray
    ok_data: np.ndarray
    label: np.ndarray
    ok_attack: np.ndarray
    shown: dict = attrs.field(factory=dict)

    def fast(self, rows, buf, words, dots, starts, ends) -> None:
        """Fill ``rows`` (all rows: ``slice(None)``) from the fields at ``starts``/``ends``."""
        self.timestamp[rows], self.ok_time[rows] = _fast_timestamps(words, starts[0], ends[0], dots)
        self.can_id[rows], self.ok_id[rows] = _fast_ids(words, starts[1], ends[1])
        self.payload[rows], self.dlc[rows], self.ok_data[rows] = _fast_payloads(words, starts[2], ends[2])
        flag = buf[starts[3]]
        self.ok_attack[rows] = (ends[3] - starts[3] == 1) & ((flag == ord("0")) | (flag == ord("1")))
        self.label[rows] = (ends[3] - starts[3] == 1) & (flag == ord("1"))

    def exact(self, rows, k: int, texts: np.ndarray) -> None:
        """Field ``k`` of ``rows`` from its stripped texts, by the column parsers of ``hexparse``."""
        if k == 0:
            self.timestamp[rows], self.ok_time[rows] = parse_floats(texts)
        elif k == 1:
            self.can_id[rows], self.ok_id[rows] = parse_hex_ids(texts)
        elif k == 2:
            self.payload[rows], self.dlc[rows], self.ok_data[rows] = parse_hex_payload(texts)
        else:
            self.ok_attack[rows] = np.isin(texts, (b"0", b"1"))
            self.label[rows] = texts == b"1"
        self.shown[k] = (rows, texts)

    def ok(self, k: int) -> np.ndarray:
        return (self.ok_time, self.ok_id, self.ok_data, self.ok_attack)[k]


def _read_lines(lines: Lines, errors: RowErrors, name: str) -> FrameTable | None:
    """The frames of these lines (None when none has four fields); bad rows go to ``errors``."""
    if len(lines) == 0:
        return None
    buf = lines.buf
    lo, hi = int(lines.start[0]), int(lines.end[-1])  # consecutive lines: the chunk is buf[lo:hi]
    region = buf[lo:hi]
    commas = np.flatnonzero(region == ord(",")) + lo
    n = len(lines)
    comma = commas.reshape(n, 3) if len(commas) == 3 * n else None
    if comma is not None and ((comma[:, 0] >= lines.start).all() and (comma[:, 2] < lines.end).all()):
        shaped = count = None  # three commas in every line: the usual file
    else:
        first = np.searchsorted(commas, lines.start)
        count = np.diff(first, append=len(commas))  # a line's commas: up to the next line's first
        if (count != 3).any():  # blank lines are not rows; other lines without three commas are bad rows
            odd = np.flatnonzero(count != 3)
            start, end = lines.start[odd].copy(), lines.end[odd].copy()
            _strip(buf, start, end)
            keep = np.ones(n, dtype=bool)
            keep[odd[start == end]] = False
            lines, first, count = lines.take(keep), first[keep], count[keep]
            n = len(lines)
        shaped = count == 3
        if not shaped.any():
            _report(lines, np.full(n, _FIELDS, np.int8), count, None, errors)
            return None
        at = np.where(shaped, first, 0)  # some row has three commas, so commas[0:3] exist
        comma = np.stack([commas[at + k] for k in range(3)], axis=1)

    starts = [lines.start, comma[:, 0] + 1, comma[:, 1] + 1, comma[:, 2] + 1]
    ends = [comma[:, 0], comma[:, 1], comma[:, 2], lines.end]
    if shaped is not None:  # rows without four fields: empty fields, read and then dropped
        starts = [np.where(shaped, s, lines.start) for s in starts]
        ends = [np.where(shaped, e, lines.start) for e in ends]
    words = _words(buf)
    dots = np.flatnonzero(region == ord(".")) + lo
    columns = _Columns(
        np.zeros(n), np.zeros(n, bool), np.zeros(n, np.uint32), np.zeros(n, bool), np.zeros((n, 8), np.uint8),
        np.zeros(n, np.uint8), np.zeros(n, bool), np.zeros(n, np.uint8), np.zeros(n, bool),
    )
    columns.fast(slice(None), buf, words, dots, starts, ends)
    unsure = ~(columns.ok_time & columns.ok_id & columns.ok_data & columns.ok_attack)
    if shaped is not None:
        unsure &= shaped
    rows = np.flatnonzero(unsure)
    if len(rows):
        # again with the fields stripped of whitespace and the ID of a 0x prefix ...
        field_starts = [s[rows].copy() for s in starts]
        field_ends = [e[rows].copy() for e in ends]
        for s, e in zip(field_starts, field_ends):
            _strip(buf, s, e)
        s, e = field_starts[1], field_ends[1]
        prefixed = (e - s > 2) & (buf[s] == ord("0")) & ((buf[s + 1] | 0x20) == ord("x"))
        field_starts[1] = s + 2 * prefixed
        columns.fast(rows, buf, words, dots, field_starts, field_ends)
        # ... and what still fails, exactly as the column parsers read the stripped text
        for k in range(4):
            exact = rows[~columns.ok(k)[rows]]
            if len(exact):
                texts = as_bytes([buf[a:b].tobytes() for a, b in zip(starts[k][exact].tolist(), ends[k][exact].tolist())])
                columns.exact(exact, k, texts)

    problem = np.zeros(n, np.int8) if shaped is None else np.where(shaped, 0, _FIELDS).astype(np.int8)
    for code, ok in zip((_TIMESTAMP, _ID, _DATA, _ATTACK), (columns.ok_time, columns.ok_id, columns.ok_data, columns.ok_attack)):
        problem[~ok & (problem == 0)] = code
    valid = _report(lines, problem, count, columns.shown, errors)
    label = columns.label
    table = FrameTable.from_frames(
        columns.timestamp, columns.can_id, columns.dlc, columns.payload, label=label, attack_type=label,
        attack_names=(NORMAL, name),
    )
    return table if valid.all() else table.take(valid)


def _report(lines: Lines, problem: np.ndarray, count, shown, errors: RowErrors) -> np.ndarray:
    """Report every bad row in line order (``error`` mode raises at the first); the valid mask."""
    for i in errors.to_report(np.flatnonzero(problem)):
        code = int(problem[i])
        if code == _FIELDS:
            errors.bad(int(lines.number[i]), "row", f"expected 4 fields, got {int(count[i]) + 1}")
        else:
            field, reason = _PROBLEMS[code]
            rows, texts = shown[code - _TIMESTAMP]
            value = texts[np.searchsorted(rows, i)].decode(errors="replace")
            errors.bad(int(lines.number[i]), field, f"{reason}: {value!r}")
    return problem == 0


def attack_name(path: Path) -> str:
    """The layout keeps only 0/1, so the attack is named by where the file sits:
    ``test_03_spoof/x.csv`` → ``spoof``; ``train_02_with_attacks/dos-1.csv`` → ``dos``."""
    match = re.fullmatch(r"test_\d+_(.+)", path.parent.name)
    if match:
        return match.group(1)
    return path.stem.lower().split("-")[0] or "attack"


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
