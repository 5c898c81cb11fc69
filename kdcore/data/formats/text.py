"""The text engine: line-oriented captures read block by block, rows split by pyarrow, fields
decoded with numpy.

A capture is read ``chunk_bytes`` at a time and cut after its last whole line (``text_blocks``),
so memory stays bounded whatever the file's size and every line keeps its 1-based number. A line
ends at LF, CRLF or a lone CR; a UTF-8 BOM at the start of the file is dropped. A line longer than
``MAX_LINE_BYTES`` (no row comes near it; a corrupt or hostile file may be one line of gigabytes)
is reported as a bad row and passed over without being held.

Rows are split by pyarrow: a delimited layout of fixed width by its CSV parser (``csv_rows``:
quotes honoured, a row of the wrong width caught by its invalid-row handler), a whitespace-
separated or ragged one by ``pyarrow.compute`` (``split_rows``). Each column is then decoded at
once with numpy (``Fields``): hex and decimal integers, hex payloads, numbers; no Python object
is made per frame. ``Problems`` keeps the first problem of each row and reports the bad rows of a
block in line order through ``RowErrors`` (``path:line: field: reason: 'value'``): ``error`` mode
raises at the first bad line of the file, ``skip`` mode formats that one message and counts.

pyarrow is imported inside the functions that parse: the format classes are imported at every
start of the command line, which must stay fast.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import numpy as np

from kdcore.data.frames import RowErrors

if TYPE_CHECKING:
    import pyarrow as pa

BOM = b"\xef\xbb\xbf"
CHUNK_BYTES = 32 << 20  # text per block: ~0.9 M ctt frames
MAX_LINE_BYTES = 1 << 16  # no row of any format comes near this
HEAD_BYTES = 1 << 16  # what a format reads of a file's start for its header and settings
SHOWN = 80  # characters of a field or line quoted in a message
PAD = 16  # spare bytes around a column's text, so fixed-width windows never run off its ends

_DIGIT = np.full(256, 255, dtype=np.uint8)  # a character's value as a hex or decimal digit
for _value, _char in enumerate(b"0123456789abcdef"):
    _DIGIT[_char] = _DIGIT[ord(chr(_char).upper())] = _value
_ZEROS = np.uint64(0x3030303030303030)  # eight '0's
_HIGH_NIBBLES = np.uint64(0xF0F0F0F0F0F0F0F0)
_SIXES = np.uint64(0x0606060606060606)  # added to a decimal digit, 6 carries into the high nibble from 10 on
_SPACE = np.zeros(256, dtype=bool)
_SPACE[list(b" \t\r\n\x0b\x0c")] = True  # what bytes.strip() removes
_NOT_LETTER = np.ones(256, dtype=np.uint8)
_NOT_LETTER[list(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")] = 0
_KEEP_FIRST = np.array([(1 << (8 * m)) - 1 for m in range(9)], dtype=np.uint64)  # a word's first m bytes
_KEEP_LAST = np.array([0] + [(1 << 64) - (1 << (8 * (8 - m))) for m in range(1, 9)], dtype=np.uint64)  # its last m
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _shorten(text: str) -> str:
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


# ============================================================================ lines and blocks


@attrs.frozen(eq=False)
class Lines:
    """Consecutive whole lines of a capture: line ``i`` is ``data[start[i]:end[i]]`` (its line
    end left out) and is line ``number[i]`` of the file; ``data`` starts at byte ``offset``, which
    is the start of line ``line``."""

    data: bytes
    start: np.ndarray
    end: np.ndarray
    number: np.ndarray
    offset: int
    line: int

    def __len__(self) -> int:
        return len(self.start)

    def text(self, i: int) -> str:
        """Line ``i``, shortened for a message."""
        return _shorten(self.data[self.start[i] : self.end[i]].decode(errors="replace"))

    def first_bytes(self) -> np.ndarray:
        """The first byte of each line (0 for an empty one)."""
        if not self.data:
            return np.zeros(len(self), dtype=np.uint8)
        first = np.frombuffer(self.data, dtype=np.uint8)[np.minimum(self.start, len(self.data) - 1)]
        return np.where(self.end > self.start, first, 0)

    def piece(self, lo: int, hi: int) -> Lines:
        """Lines ``lo`` to ``hi - 1`` on their own."""
        begin = int(self.start[lo]) if lo < len(self) else len(self.data)
        stop = int(self.start[hi]) if hi < len(self) else len(self.data)
        return Lines(
            self.data[begin:stop], self.start[lo:hi] - begin, self.end[lo:hi] - begin, self.number[lo:hi], self.offset + begin,
            self.line + lo,
        )


def split_lines(data: bytes, offset: int = 0, line: int = 1) -> Lines:
    """The lines of ``data``, numbered from ``line``; a final line end ends the last line."""
    buf = np.frombuffer(data, dtype=np.uint8)
    terminator = np.flatnonzero(buf == 10)
    end = terminator
    if data.find(b"\r") >= 0:
        end = terminator - ((terminator > 0) & (buf[np.maximum(terminator - 1, 0)] == 13))  # CRLF: the line ends before the CR
        carriage = np.flatnonzero(buf == 13)
        lone = carriage[buf[np.minimum(carriage + 1, len(buf) - 1)] != 10]  # (a CR last in ``data`` is lone too)
        if len(lone):
            terminator, end = np.concatenate((terminator, lone)), np.concatenate((end, lone))
            order = np.argsort(terminator, kind="stable")
            terminator, end = terminator[order], end[order]
    start = np.concatenate(([0], terminator + 1))
    end = np.concatenate((end, [len(buf)]))
    if start[-1] == len(buf):  # nothing after the final line end
        start, end = start[:-1], end[:-1]
    return Lines(data, start, end, np.arange(line, line + len(start), dtype=np.int64), offset, line)


def text_blocks(path: Path, errors: RowErrors, chunk_bytes: int = CHUNK_BYTES, offset: int = 0, line: int = 1) -> Iterator[Lines]:
    """Consecutive blocks of whole lines from byte ``offset`` (the start of line ``line``) on; at
    least one, maybe of no lines. An over-long line is reported in its turn, between the blocks
    before and after it, and passed over."""
    with path.open("rb") as handle:
        handle.seek(offset)
        pending, after_cr, yielded = b"", False, False
        while True:
            data = handle.read(max(chunk_bytes, len(BOM)))
            if after_cr and data.startswith(b"\n"):  # the LF of a CRLF cut after its CR
                data, offset = data[1:], offset + 1
            after_cr = False
            text = pending + data if pending else data
            if offset == 0 and text.startswith(BOM):
                text, offset = text[len(BOM) :], len(BOM)
            if data:
                cut = max(text.rfind(b"\n"), text.rfind(b"\r")) + 1
                if cut == 0:
                    if len(text) <= MAX_LINE_BYTES:
                        pending = text
                        continue
                    pending, passed, after_cr = _pass_line(handle)
                    _report_long(errors, line, text)
                    offset, line = offset + len(text) + passed, line + 1
                    continue
                after_cr = cut == len(text) and text.endswith(b"\r")
                text, pending = text[:cut], text[cut:]
            lines = split_lines(text, offset, line)
            for piece in _short_pieces(lines, errors):
                yielded = True
                yield piece
            if not data:
                if not yielded:
                    yield lines
                return
            offset, line = offset + len(text), line + len(lines)


def _pass_line(handle) -> tuple[bytes, int, bool]:
    """Read on to the end of the current line without holding it: what follows its line end, the
    bytes passed over, and whether the line end was a CR at the end of a read (maybe half a CRLF)."""
    passed = 0
    while data := handle.read(1 << 20):
        ends = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
        if ends:
            cut = min(ends) + 1
            if data[cut - 1 : cut + 1] == b"\r\n":
                cut += 1
            return data[cut:], passed + cut, data[cut - 1 :] == b"\r"
        passed += len(data)
    return b"", passed, False


def _report_long(errors: RowErrors, line: int, start: bytes) -> None:
    shown = _shorten(start[:SHOWN].decode(errors="replace"))
    errors.bad(line, "row", f"a line longer than any row (more than {MAX_LINE_BYTES} bytes): {shown!r}")


def _short_pieces(lines: Lines, errors: RowErrors) -> Iterator[Lines]:
    """The lines around each over-long one, which is reported in its turn."""
    lo = 0
    for k in np.flatnonzero(lines.end - lines.start > MAX_LINE_BYTES).tolist():
        if k > lo:
            yield lines.piece(lo, k)
        _report_long(errors, int(lines.number[k]), lines.data[lines.start[k] : lines.start[k] + SHOWN])
        lo = k + 1
    if lo < len(lines):
        yield lines.piece(lo, len(lines))


def head_lines(head: bytes, limit: int = 20) -> list[bytes]:
    """The first complete, non-blank lines of a file's head, stripped (a cut-off last line is left out)."""
    head = head[len(BOM) :] if head.startswith(BOM) else head
    lines = head.splitlines(keepends=True)
    if len(lines) > 1 and not lines[-1].endswith((b"\n", b"\r")):
        lines = lines[:-1]
    stripped = (line.strip() for line in lines)
    return [line for line in stripped if line][:limit]


def sniff_rows(head: bytes, pattern: re.Pattern, skip=None, limit: int = 10) -> bool:
    """Whether most (at least half, and at least one) of the first rows match ``pattern``.

    ``skip``: a predicate for header/comment lines that are not rows.
    """
    rows = [line for line in head_lines(head, 200) if not (skip and skip(line))][:limit]
    matches = sum(1 for row in rows if pattern.match(row))
    return matches >= 1 and 2 * matches >= len(rows)


def read_head(path: Path) -> bytes:
    """The first ``HEAD_BYTES`` of a file, without a BOM: where formats find their header."""
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
    return head[len(BOM) :] if head.startswith(BOM) else head


# ============================================================================ fields


@attrs.frozen(eq=False)
class Fields:
    """One field of every row: field ``i`` is ``data[start[i] : start[i] + length[i]]``.

    ``data`` has ``PAD`` spare bytes before and after the text, so that a window of up to
    ``PAD`` bytes around any field stays inside it.
    """

    data: np.ndarray
    start: np.ndarray
    length: np.ndarray
    source: pa.Array | Callable[[], pa.Array] | None = None  # the same values as an arrow array, when at hand

    @classmethod
    def of(cls, array: pa.Array) -> Fields:
        """The values of a binary or string arrow array (copied once, with the padding)."""
        import pyarrow as pa

        large = pa.types.is_large_binary(array.type) or pa.types.is_large_string(array.type)
        offsets = np.frombuffer(array.buffers()[1], dtype=np.int64 if large else np.int32)
        offsets = offsets[array.offset : array.offset + len(array) + 1].astype(np.int64)
        text = np.frombuffer(array.buffers()[2] or b"", dtype=np.uint8)[offsets[0] : offsets[-1]]
        data = np.zeros(PAD + len(text) + PAD, dtype=np.uint8)
        data[PAD : PAD + len(text)] = text
        return cls(data, offsets[:-1] - offsets[0] + PAD, np.diff(offsets), array)

    def __len__(self) -> int:
        return len(self.start)

    def take(self, rows) -> Fields:
        return Fields(self.data, self.start[rows], self.length[rows])

    def text(self, i: int) -> str:
        """Field ``i`` as text, shortened for a message."""
        start = int(self.start[i])
        return _shorten(self.data[start : start + int(self.length[i])].tobytes().decode(errors="replace"))

    def arrow(self) -> pa.Array:
        """The fields as an arrow string array: the one they came from, else a copy."""
        import pyarrow as pa

        if self.source is not None:
            return self.source() if callable(self.source) else self.source
        offsets = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(self.length, out=offsets[1:])
        index = np.repeat(self.start - offsets[:-1], self.length) + np.arange(offsets[-1])
        values = self.data[index]
        return pa.Array.from_buffers(pa.large_string(), len(self), [None, pa.py_buffer(offsets), pa.py_buffer(values)])

    def strip(self) -> Fields:
        """Without the whitespace around each field."""
        import pyarrow.compute as pc

        return Fields.of(pc.ascii_trim_whitespace(self.arrow()))

    def cut(self, front=0, back=0) -> Fields:
        """Without ``front`` bytes at the start and ``back`` at the end of each field (scalars or
        arrays); a field shorter than that becomes empty."""
        length = np.maximum(self.length - front - back, 0)
        source = None
        if self.source is not None and np.ndim(front) == 0 and np.ndim(back) == 0 and back > 0:
            source = lambda: _slice(self.arrow(), front, back)  # noqa: E731 — made only if asked for
        return Fields(self.data, self.start + np.minimum(front, self.length), length, source)

    def equals(self, value: bytes) -> np.ndarray:
        """Whether each field is exactly ``value`` (of at most 16 bytes)."""
        return (self.length == len(value)) & self._begins(value)

    def startswith(self, prefix: bytes) -> np.ndarray:
        """Whether each field starts with ``prefix`` (of at most 16 bytes)."""
        return (self.length >= len(prefix)) & self._begins(prefix)

    def _begins(self, value: bytes) -> np.ndarray:
        k = 1 if len(value) <= 8 else 2
        words = self._words(k, keep=True)
        target = np.frombuffer(value.ljust(8 * k, b"\0"), dtype="<u8")
        ok = np.ones(len(self), dtype=bool)
        for j in range(k):
            keep = _KEEP_FIRST[min(max(len(value) - 8 * j, 0), 8)]
            ok &= (words[:, j] & keep) == target[j]
        return ok

    def first(self) -> np.ndarray:
        """The first byte of each field (0 for an empty one)."""
        return np.where(self.length > 0, self.data[self.start], 0)

    def last(self) -> np.ndarray:
        """The last byte of each field (0 for an empty one)."""
        return np.where(self.length > 0, self.data[self.start + self.length - 1], 0)

    def letters(self) -> np.ndarray:
        """Whether each field is a word of 1-8 ASCII letters."""
        other = _NOT_LETTER[self._window(8, keep=True)].view("<u8").reshape(-1)
        return (self.length >= 1) & (self.length <= 8) & ((other & _KEEP_FIRST[np.minimum(self.length, 8)]) == 0)

    def find(self, byte: int) -> np.ndarray:
        """Where ``byte`` first occurs in each field (relative to its start), -1 where it does not."""
        hits = np.flatnonzero(self.data == byte)
        if len(hits) == 0:
            return np.full(len(self), -1, dtype=np.int64)
        at = hits[np.minimum(np.searchsorted(hits, self.start), len(hits) - 1)]
        return np.where((at >= self.start) & (at < self.start + self.length), at - self.start, -1)

    def _words(self, k: int, end: bool = False, keep: bool = False) -> np.ndarray:
        """(n, k) uint64, ``k`` <= 2: each field's first ``8 k`` bytes (``end``: its last,
        right-aligned), the bytes outside the field set to '0' (``keep``: left as they are).

        Eight bytes are loaded at a time, from a byte-strided uint64 view of the text (``words[i]``
        is ``data[i:i+8]``), and masked with whole-word operations."""
        words = np.ndarray((len(self.data) - 7,), dtype="<u8", buffer=self.data, strides=(1,))
        loaded = np.empty((len(self), k), dtype="<u8")
        for j in range(k):
            if end:
                word = words[self.start + self.length - 8 * (k - j)]
                mask = _KEEP_LAST[np.clip(self.length - 8 * (k - 1 - j), 0, 8)]
            else:
                word = words[self.start + 8 * j]
                mask = _KEEP_FIRST[np.clip(self.length - 8 * j, 0, 8)]
            loaded[:, j] = word if keep else (word & mask) | (_ZEROS & ~mask)
        return loaded

    def _window(self, width: int, end: bool = False, keep: bool = False) -> np.ndarray:
        """(n, width) bytes, ``width`` <= 16: ``_words`` as characters."""
        k = 1 if width <= 8 else 2
        chars = self._words(k, end, keep).view(np.uint8).reshape(len(self), 8 * k)
        return chars[:, 8 * k - width :] if end else chars[:, :width]

    def uint(self, base: int = 16, digits: int = 8, prefix: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Unsigned integers of 1 to ``digits`` (<= 16) digits in ``base`` (16: at most 8; or 10)
        → uint64 values and whether each parsed. Surrounding whitespace is allowed, and with
        ``prefix`` a ``0x`` before hex digits."""
        values, ok = self._uint(base, digits)
        bad = np.flatnonzero(~ok)
        if len(bad):  # again, without whitespace and prefix
            loose = self.take(bad).strip()
            if base == 16 and prefix:
                loose = loose.cut(front=2 * ((loose.length > 2) & (loose.startswith(b"0x") | loose.startswith(b"0X"))))
            values[bad], ok[bad] = loose._uint(base, digits)
        return values, ok

    def _uint(self, base: int, digits: int) -> tuple[np.ndarray, np.ndarray]:
        """Digits right-aligned in one or two words, decoded eight at a time: hex digit pairs
        are the bytes of a big-endian uint32; decimal ones are summed up in place (SWAR)."""
        if digits <= 2:  # a byte or a DLC: two characters are all there is to look at
            last = _DIGIT[self.data[self.start + self.length - 1]]
            before = np.where(self.length == 2, _DIGIT[self.data[self.start + self.length - 2]], 0)
            ok = (self.length >= 1) & (self.length <= digits) & (last < base) & (before < base)
            return (before.astype(np.uint64) * np.uint64(base) + last) * ok, ok
        k = 1 if digits <= 8 else 2
        value = _DIGIT[self._words(k, end=True).view(np.uint8)].view("<u8").reshape(len(self), k)  # 255: no digit
        high = value & _HIGH_NIBBLES if base == 16 else (value | (value + _SIXES)) & _HIGH_NIBBLES  # nonzero: no digit
        ok = (self.length >= 1) & (self.length <= digits) & ((high[:, 0] | high[:, -1]) == 0)
        if base == 16:
            nibbles = value.view(np.uint8)
            return ((nibbles[:, 0::2] << 4) | (nibbles[:, 1::2] & 15)).view(">u4").reshape(-1).astype(np.uint64) * ok, ok
        value = (value * np.uint64(10) + (value >> np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
        value = (value * np.uint64(100) + (value >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
        value = (value * np.uint64(10000) + (value >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
        total = value[:, 0] * np.uint64(10**8) + value[:, 1] if k == 2 else value[:, 0]
        return total * ok, ok

    def payload(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One hex string of 0-8 bytes per field → (n, 8) payload, DLC and whether each parsed
        (surrounding whitespace allowed)."""
        packed = self._packed_payload()
        if packed is not None:
            return packed
        payload, dlc, ok = self._payload()
        bad = np.flatnonzero(~ok)
        if len(bad):
            payload[bad], dlc[bad], ok[bad] = self.take(bad).strip()._payload()
        return payload, dlc, ok

    def _packed_payload(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The usual column of hex payloads, back to back in the text (as a CSV column is), each of
        an even number of 0-16 digits and no other character, decoded in one ``unhexlify``; None
        for any other."""
        if not len(self) or (self.length & 1).any() or self.length.max() > 16:
            return None
        if not np.array_equal(self.start[1:], self.start[:-1] + self.length[:-1]):
            return None
        try:
            raw = binascii.unhexlify(self.data[self.start[0] : self.start[-1] + self.length[-1]])
        except binascii.Error:
            return None
        decoded = np.zeros(len(raw) + 8, dtype=np.uint8)
        decoded[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        dlc = (self.length // 2).astype(np.uint8)
        payload = np.lib.stride_tricks.sliding_window_view(decoded, 8)[(self.start - self.start[0]) // 2]
        payload *= np.arange(8) < dlc[:, None]
        return payload, dlc, np.ones(len(self), dtype=bool)

    def _payload(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nibbles = _DIGIT[self._window(16)]
        hex_digits = (nibbles.view("<u8") & _HIGH_NIBBLES == 0).all(axis=1)  # a non-digit is 255
        ok = (self.length % 2 == 0) & (self.length <= 16) & hex_digits
        payload = (nibbles[:, 0::2] << 4) | (nibbles[:, 1::2] & 15)
        payload[~ok] = 0
        return payload, (np.minimum(self.length, 16) // 2).astype(np.uint8), ok

    def floats(self) -> tuple[np.ndarray, np.ndarray]:
        """Decimal numbers (``1.5``, ``-2``, ``3e-3``; whitespace around allowed) → float64, by
        pyarrow's cast, and whether each is a finite number."""
        import pyarrow as pa
        import pyarrow.compute as pc

        text = self.arrow()
        try:
            values = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:  # some field is no number: find which, and convert the others
            text = pc.ascii_trim_whitespace(text)
            number = pc.match_substring_regex(text, _NUMBER.pattern).to_numpy(zero_copy_only=False)
            values = np.full(len(self), np.nan)
            values[number] = pc.cast(text.filter(pa.array(number)), pa.float64()).to_numpy(zero_copy_only=False)
        return values, np.isfinite(values)


def _slice(text: pa.Array, front: int, back: int) -> pa.Array:
    """Each string without ``front`` bytes at its start and ``back`` (> 0) at its end. (pyarrow
    26's ``binary_slice`` fails when the slice runs to the end: ``stop=None``.)"""
    import pyarrow as pa
    import pyarrow.compute as pc

    binary = text.view(pa.large_binary() if pa.types.is_large_string(text.type) else pa.binary())
    return pc.binary_slice(binary, front, -back).view(text.type)


# ============================================================================ rows


class Rows:
    """The rows of a block, split into fields: row ``i`` is line ``number[i]`` and has
    ``count[i]`` fields. ``field(k)`` gives field ``k`` of every row; ``line(i)`` row ``i``'s
    whole line, for messages."""

    def __init__(self, lines: Lines, index: np.ndarray, count: np.ndarray):
        self.lines = lines
        self.index = index  # each row's line, as an index into ``lines``
        self.count = count

    def __len__(self) -> int:
        return len(self.index)

    @property
    def number(self) -> np.ndarray:
        return self.lines.number[self.index]

    def line(self, i: int) -> str:
        return self.lines.text(int(self.index[i]))

    def field(self, k) -> Fields:
        raise NotImplementedError

    def categories(self, k: int) -> tuple[list[bytes], np.ndarray]:
        """Field ``k`` as categories: its distinct values (maybe repeated) and each row's index
        into them; for a column of few values (labels) decided once per value."""
        import pyarrow as pa
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(self.field(k).arrow())
        return encoded.dictionary.cast(pa.large_binary()).to_pylist(), encoded.indices.to_numpy(zero_copy_only=False)

    def take(self, rows) -> Rows:
        raise NotImplementedError


class TokenRows(Rows):
    """Rows split by ``pyarrow.compute``: row ``i``'s fields are ``values`` ``first[i]`` on."""

    def __init__(self, lines: Lines, index: np.ndarray, count: np.ndarray, values: Fields, first: np.ndarray):
        super().__init__(lines, index, count)
        self.values = values
        self.first = first

    def field(self, k) -> Fields:
        """Field ``k`` (an int or one per row; negative counts from the end) of every row; an
        empty field where a row has no such field."""
        if len(self.values) == 0:
            return Fields(self.values.data, np.full(len(self), PAD), np.zeros(len(self), dtype=np.int64))
        if np.ndim(k) == 0 and k >= 0:
            present, at = self.count > k, self.first + k
        else:
            index = np.where(np.asarray(k) < 0, self.count + k, k)
            present, at = (index >= 0) & (index < self.count), self.first + index
        if present.all():
            import pyarrow.compute as pc

            source = lambda: pc.take(self.values.source, at)  # noqa: E731 — made only if asked for
            return Fields(self.values.data, self.values.start[at], self.values.length[at], source)
        at = np.clip(at, 0, len(self.values) - 1)
        return Fields(self.values.data, self.values.start[at], np.where(present, self.values.length[at], 0))

    def take(self, rows) -> TokenRows:
        return TokenRows(self.lines, self.index[rows], self.count[rows], self.values, self.first[rows])


class ColumnRows(Rows):
    """Rows of fixed width parsed by pyarrow's CSV reader: ``columns`` holds the fields read as
    text, ``categorical`` those read dictionary-encoded (values, each row's index)."""

    def __init__(self, lines: Lines, index: np.ndarray, width: int, columns: dict[int, Fields], categorical: dict[int, tuple[list[bytes], np.ndarray]]):
        super().__init__(lines, index, np.full(len(index), width, dtype=np.int64))
        self.width = width
        self.columns = columns
        self.categorical = categorical

    def field(self, k: int) -> Fields:
        return self.columns[k % self.width]

    def categories(self, k: int) -> tuple[list[bytes], np.ndarray]:
        return self.categorical[k % self.width]

    def take(self, rows) -> ColumnRows:
        categorical = {k: (values, index[rows]) for k, (values, index) in self.categorical.items()}
        return ColumnRows(self.lines, self.index[rows], self.width, {k: f.take(rows) for k, f in self.columns.items()}, categorical)


def split_rows(lines: Lines, delimiter: str | None = None) -> TokenRows:
    """Rows split at runs of whitespace (``delimiter=None``) or at every ``delimiter`` (no
    quoting), by ``pyarrow.compute``; blank lines are left out."""
    import pyarrow as pa
    import pyarrow.compute as pc

    offsets = np.append(lines.start, len(lines.data)).astype(np.int64)
    text = pa.Array.from_buffers(pa.large_string(), len(lines), [None, pa.py_buffer(offsets), pa.py_buffer(lines.data)])
    text = pc.ascii_trim_whitespace(text)  # else a leading blank, or the line end, would make an empty field
    split = pc.ascii_split_whitespace(text) if delimiter is None else pc.split_pattern(text, delimiter)
    list_offsets = split.offsets.to_numpy().astype(np.int64)
    values = Fields.of(split.values)
    first, count = list_offsets[:-1], np.diff(list_offsets)
    rows = TokenRows(lines, np.arange(len(lines)), count, values, first)
    blank = (count == 1) & (values.length[np.minimum(first, max(len(values) - 1, 0))] == 0)
    return rows.take(~blank) if blank.any() else rows


@attrs.frozen
class BadLines:
    """Bad rows that did not become rows (a wrong number of fields, ...): their line numbers and,
    for the one reported, ``describe(i)``: the field and the reason of the ``i``-th."""

    number: np.ndarray
    describe: Callable[[int], tuple[str, str]]


def csv_rows(
    lines: Lines, width: int, columns: list[int], delimiter: str, quote: str | None, ignore: np.ndarray, categorical: tuple[int, ...] = ()
) -> tuple[ColumnRows, BadLines]:
    """Rows of a delimited layout of ``width`` fields, parsed by pyarrow's CSV reader: ``columns``
    are the fields kept as text, ``categorical`` those dictionary-encoded by the reader (a label
    column), the others only counted. ``ignore`` marks the lines that are no rows (header,
    comments); blank lines are left out too. A line of another width, and one with an unbalanced
    quote (a value may not span lines: one row a line), is a bad line."""
    import pyarrow as pa
    import pyarrow.csv as csv

    unbalanced = _odd_quotes(lines, quote) & ~ignore if quote is not None else np.zeros(len(lines), dtype=bool)
    hidden = ignore | unbalanced
    lead = int(np.argmin(hidden)) if not hidden.all() else len(lines)  # leading lines that are no rows (the header)
    parsed = lines.piece(lead, len(lines))  # are left out; hidden lines after them are blanked
    data = _blanked(parsed, hidden[lead:]) if hidden[lead:].any() else parsed.data
    if data and np.frombuffer(data, np.uint8).max() >= 0x80:
        data = data.decode(errors="replace").encode()  # pyarrow decodes a row of the wrong width for its handler
    names = [str(k) for k in range(width)]
    types = {names[k]: pa.string() for k in columns} | {names[k]: pa.dictionary(pa.int32(), pa.string()) for k in categorical}
    invalid = []  # lines (one row each) whose number of fields is not ``width``

    def handler(row) -> str:
        invalid.append(None if row.number is None else lead + row.number - 1)
        return "skip"

    def read(threads: bool):
        return csv.read_csv(
            pa.py_buffer(data),
            csv.ReadOptions(use_threads=threads, column_names=names, block_size=len(data) + 1),
            csv.ParseOptions(delimiter=delimiter, quote_char=quote or False, ignore_empty_lines=False, invalid_row_handler=handler),
            csv.ConvertOptions(include_columns=list(types), column_types=types, check_utf8=False),
        )

    if len(parsed):
        table = read(True)
        if invalid:  # pyarrow numbers the rows it hands to the handler only when it reads on one thread
            invalid.clear()
            table = read(False)
        fields = {k: Fields.of(table.column(names[k]).combine_chunks()) for k in columns}
        encoded = {k: _categories(table.column(names[k])) for k in categorical}
    else:
        fields = {k: Fields(np.zeros(2 * PAD, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64)) for k in columns}
        encoded = {k: ([], np.zeros(0, dtype=np.int64)) for k in categorical}
    invalid = np.asarray(invalid, dtype=np.int64)
    index = np.delete(np.arange(lead, len(lines)), invalid - lead)
    rows = ColumnRows(lines, index, width, fields, encoded)
    kept = ~(hidden[index] | (lines.end[index] == lines.start[index]))
    if width == 1:  # only then is a line of blanks a row (of one field)
        kept &= ~_blank(lines, index)
    invalid = invalid[~hidden[invalid]]
    invalid = invalid[~_blank(lines, invalid)]
    bad = np.sort(np.concatenate((invalid, np.flatnonzero(unbalanced))))

    def describe(i: int) -> tuple[str, str]:
        k = int(bad[i])
        if unbalanced[k]:
            return "row", f"a quoted value that does not end on its line: {lines.text(k)!r}"
        got = len(next(_csv_reader(lines, k, delimiter, quote), []))
        return "row", f"expected {width} fields, got {got}: {lines.text(k)!r}"

    return rows.take(kept) if not kept.all() else rows, BadLines(lines.number[bad], describe)


def _categories(column) -> tuple[list[bytes], np.ndarray]:
    """The values and indexes of a dictionary-encoded column, its chunks' dictionaries one after the other."""
    import pyarrow as pa

    values: list[bytes] = []
    indexes = []
    for chunk in column.chunks:
        indexes.append(chunk.indices.to_numpy(zero_copy_only=False).astype(np.int64) + len(values))
        values += chunk.dictionary.view(pa.binary()).to_pylist()
    return values, np.concatenate(indexes) if indexes else np.zeros(0, dtype=np.int64)


def _csv_reader(lines: Lines, k: int, delimiter: str, quote: str | None):
    import csv

    text = lines.data[lines.start[k] : lines.end[k]].decode(errors="replace")
    return csv.reader([text], delimiter=delimiter, quotechar=quote or '"', quoting=csv.QUOTE_MINIMAL if quote else csv.QUOTE_NONE)


def _odd_quotes(lines: Lines, quote: str) -> np.ndarray:
    """Lines with an odd number of quote characters."""
    if lines.data.find(quote.encode()) < 0:
        return np.zeros(len(lines), dtype=bool)
    quotes = np.flatnonzero(np.frombuffer(lines.data, np.uint8) == ord(quote))
    return (np.searchsorted(quotes, lines.end) - np.searchsorted(quotes, lines.start)) % 2 == 1


def _blanked(lines: Lines, hidden: np.ndarray) -> bytes:
    """The text with the ``hidden`` lines' characters turned into spaces (their line ends kept)."""
    buf = np.frombuffer(lines.data, np.uint8).copy()
    edges = np.zeros(len(buf) + 1, dtype=np.int8)
    np.add.at(edges, lines.start[hidden], 1)
    np.add.at(edges, lines.end[hidden], -1)
    buf[np.cumsum(edges[:-1], dtype=np.int8) > 0] = ord(" ")
    return buf.tobytes()


def _blank(lines: Lines, rows: np.ndarray) -> np.ndarray:
    """Whether each of these lines is empty or only whitespace."""
    length = lines.end[rows] - lines.start[rows]
    offsets = np.concatenate(([0], np.cumsum(length)))
    index = np.repeat(lines.start[rows] - offsets[:-1], length) + np.arange(offsets[-1])
    content = np.concatenate(([0], np.cumsum(~_SPACE[np.frombuffer(lines.data, np.uint8)[index]])))
    return content[offsets[1:]] == content[offsets[:-1]]


# ============================================================================ problems


class Problems:
    """The first problem of each row of a block, reported in line order with the block's bad
    lines (``BadLines``): ``path:line: field: reason: 'value'``."""

    def __init__(self, rows: Rows, *bad_lines: BadLines):
        self.rows = rows
        self.bad_lines = bad_lines
        self.problem = np.full(len(rows), -1, dtype=np.int32)
        self.checks: list[tuple[str, str, Fields | Callable[[int], str] | None]] = []

    @property
    def ok(self) -> np.ndarray:
        return self.problem < 0

    def require(self, ok: np.ndarray, field: str, reason: str, shown: Fields | Callable[[int], str] | None = None) -> None:
        """Rows where ``ok`` is false (and that have no earlier problem) get this one. ``shown``:
        the fields to quote (or a function giving a row's value, called only for a reported
        row); by default the row's whole line."""
        new = ~ok & (self.problem < 0)
        if new.any():
            self.problem[new] = len(self.checks)
        self.checks.append((field, reason, shown))

    def report(self, errors: RowErrors) -> np.ndarray:
        """Report every bad row and line in line order (``error`` mode raises at the first); the
        rows without a problem."""
        rows = np.flatnonzero(self.problem >= 0)
        numbers = [self.rows.number[rows], *(bad.number for bad in self.bad_lines)]
        source = np.concatenate([np.full(len(n), s, dtype=np.int64) for s, n in enumerate(numbers)])
        position = np.concatenate([np.arange(len(n)) for n in numbers])
        order = np.argsort(np.concatenate(numbers), kind="stable")
        for k in errors.to_report(order):
            s, i = int(source[k]), int(position[k])
            if s == 0:
                field, reason, value = self._describe(int(rows[i]))
                errors.bad(int(self.rows.number[rows[i]]), field, f"{reason}: {value!r}")
            else:
                field, reason = self.bad_lines[s - 1].describe(i)
                errors.bad(int(numbers[s][i]), field, reason)
        return self.ok

    def _describe(self, row: int) -> tuple[str, str, str]:
        field, reason, shown = self.checks[int(self.problem[row])]
        value = self.rows.line(row) if shown is None else shown.text(row) if isinstance(shown, Fields) else shown(row)
        return field, reason, value


# ============================================================================ frame fields

MAX_ID = 0x1FFFFFFF


def byte_fields(rows: Rows, indexes: list, dlc: np.ndarray, base: int, problems: Problems, name: str = "data") -> np.ndarray:
    """The payload of rows with one field per byte: byte ``k`` (``k < dlc``) is field
    ``indexes[k]`` (an int, or one per row), in ``base`` 16 or 10; zeros past the DLC."""
    n = len(rows)
    payload = np.zeros((n, 8), dtype=np.uint8)
    bad = np.zeros((n, 8), dtype=bool)
    for k, index in enumerate(indexes[:8]):
        present = k < dlc
        if not present.any():
            break
        value, ok = rows.field(index).uint(base, 2 if base == 16 else 3, prefix=False)
        ok &= value <= 255
        payload[:, k] = np.where(present & ok, value, 0)
        bad[:, k] = present & ~ok
    first_bad = np.argmax(bad, axis=1)
    kind = "hex" if base == 16 else "decimal"
    problems.require(~bad.any(axis=1), name, f"not a {kind} byte", lambda i: rows.field(indexes[first_bad[i]]).text(i))
    return payload


def frame_fields(
    rows: Rows, problems: Problems, id_at, dlc_at, data_at, fields, base: int = 16, remote: np.ndarray | None = None,
    remote_fields: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CAN ID, DLC and payload of rows laid out as ``... ID ... DLC byte byte ...``, a field
    each. ``fields``: how many fields a row has besides its data bytes; ``remote``: the rows that
    are remote frames, which have no data bytes but ``remote_fields`` fields (by default one
    more, a marker such as ``RTR``)."""
    remote = np.zeros(len(rows), dtype=bool) if remote is None else remote
    field = rows.field(dlc_at)
    dlc, ok = field.uint(10, 2, prefix=False)
    ok &= dlc <= 8
    problems.require(ok, "dlc", "expected a DLC of 0-8", field)
    dlc = np.where(ok, dlc, 0)
    data_dlc = np.where(remote, 0, dlc)
    expected = np.where(remote, fields + 1 if remote_fields is None else remote_fields, fields + data_dlc)
    problems.require(rows.count == expected, "row", "the number of data bytes does not match the DLC")
    field = rows.field(id_at)
    can_id, ok = field.uint(base, 8 if base == 16 else 10)
    problems.require(ok & (can_id <= MAX_ID), "can_id", f"not a {'hex' if base == 16 else 'decimal'} CAN ID", field)
    data_at = np.asarray(data_at)
    payload = byte_fields(rows, [data_at + k for k in range(8)], data_dlc, base, problems)
    return can_id, dlc, payload
