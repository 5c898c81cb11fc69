"""Vectorised scanning of line-oriented text captures, shared by the text readers and writers.

A capture is read once into a numpy byte buffer. Lines and tokens (runs of bytes between
separators) are found with array operations, so no Python object is made per frame; each column
a reader needs is then gathered into a fixed-width numpy bytes array, which ``hexparse`` (or
``parse_uint`` here) converts. ``RowChecks`` collects the per-row problems and reports them in
line order through ``RowErrors``, so the first bad row raised is the first bad line of the file.

The formatting helpers at the end (``format_fixed``, ``format_hex``, ``format_payload``) are the
writers' side: numpy columns to fixed-width text columns without a Python loop per frame.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import attrs
import numpy as np

from kdcore.data.frames import FrameTable, RowErrors

BOM = b"\xef\xbb\xbf"
SPACE = b" \t"
PAD = 64  # spare bytes after the text in every buffer, so fixed-width windows never run off its end
_SHOWN = 80  # characters of a bad line quoted in its message


def _table(chars: bytes) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[list(chars)] = True
    return table


@attrs.frozen(eq=False)
class Lines:
    """Lines of a byte buffer: ``buf[start[i]:end[i]]`` is line ``number[i]`` (1-based), without its newline."""

    buf: np.ndarray
    start: np.ndarray
    end: np.ndarray
    number: np.ndarray

    def __len__(self) -> int:
        return len(self.start)

    def take(self, index) -> Lines:
        return Lines(self.buf, self.start[index], self.end[index], self.number[index])

    def text(self, i: int) -> str:
        """Line ``i`` (an index into this selection) as text, shortened for messages."""
        text = self.buf[self.start[i] : self.end[i]].tobytes().decode(errors="replace")
        return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def split_lines(data: bytes) -> Lines:
    """Every line of ``data`` (LF or CRLF endings, an optional UTF-8 BOM); a final newline ends the last line."""
    padded = np.empty(len(data) + PAD, dtype=np.uint8)
    padded[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    return _lines(padded, len(data))


def read_lines(path: Path) -> Lines:
    """The lines of a file, read straight into one padded buffer (no second copy of the text)."""
    with Path(path).open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        padded = np.empty(size + PAD, dtype=np.uint8)
        got = handle.readinto(memoryview(padded)[:size])
        rest = handle.read()
    if got != size or rest:  # the file changed under us: fall back to a plain read
        return split_lines(Path(path).read_bytes())
    return _lines(padded, size)


def _lines(padded: np.ndarray, size: int) -> Lines:
    """Lines of ``padded[:size]``; the ``PAD`` bytes after the text become newlines."""
    padded[size:] = 10  # newlines: separators to the tokenizer, masked off by ``gather``
    buf = padded[:size]
    newlines = np.flatnonzero(buf == 10).astype(np.int64, copy=False)
    # built in place, without temporaries: a file of tiny lines costs ~24 bytes a line here
    start = np.empty(len(newlines) + 1, dtype=np.int64)
    start[0] = 0
    np.add(newlines, 1, out=start[1:])
    end = np.append(newlines, size)
    del newlines
    if size == 0 or buf[-1] == 10:
        start, end = start[:-1], end[:-1]  # nothing after the final newline
    if buf[:3].tobytes() == BOM and len(start):
        start[0] = 3
    if len(end):
        last = np.maximum(end - 1, 0)
        carriage = buf[last] == 13
        del last
        carriage &= end > start
        end -= carriage
    return Lines(padded, start, end, np.arange(1, len(start) + 1, dtype=np.int64))


@attrs.frozen(eq=False)
class Tokens:
    """The tokens of each line: line ``i`` has ``count[i]`` tokens, from ``first[i]`` in ``starts``/``ends``."""

    lines: Lines
    first: np.ndarray
    count: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    separators: bytes = SPACE

    def __len__(self) -> int:
        return len(self.first)

    def take(self, index) -> Tokens:
        return Tokens(self.lines.take(index), self.first[index], self.count[index], self.starts, self.ends, self.separators)

    def span(self, k: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start and length of token ``k`` of every line (negative: from the end); length 0 where absent."""
        if len(self.starts) == 0:
            return np.zeros(len(self), np.int64), np.zeros(len(self), np.int64)
        if np.ndim(k) == 0 and int(k) >= 0:
            present = self.count > int(k)
            position = self.first + int(k)
        else:
            k = np.asarray(k, dtype=np.int64)
            index = np.where(k < 0, self.count + k, k)
            present = (index >= 0) & (index < self.count)
            position = self.first + index
        np.minimum(position, len(self.starts) - 1, out=position)
        np.maximum(position, 0, out=position)
        start = self.starts[position]
        length = self.ends[position] - start
        length[~present] = 0
        return start, length

    def column(self, k, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Token ``k`` of every line as a bytes array of at most ``width`` bytes, and whether it fitted."""
        start, length = self.span(k)
        return gather(self.lines.buf, start, length, width)

    def equals(self, k, word: bytes) -> np.ndarray:
        column, fits = self.column(k, len(word))
        return fits & (column == word)

    def subtokens(self, k, separators: bytes) -> Tokens:
        """Token ``k`` of every line, split again at ``separators`` (e.g. ``hh:mm:ss`` at ``:``)."""
        start, length = self.span(k)
        # the parent's separators too: each span then starts and ends at a separator
        return tokenize(Lines(self.lines.buf, start, start + length, self.lines.number), separators + self.separators)


def tokenize(lines: Lines, separators: bytes = SPACE) -> Tokens:
    """Split every line at runs of ``separators`` (empty fields vanish: ``a,,b`` is two tokens)."""
    buf = lines.buf
    n = len(lines)
    if n == 0 or len(buf) == 0:
        empty = np.zeros(n, np.int64)
        return Tokens(lines, empty, empty.copy(), np.zeros(0, np.int64), np.zeros(0, np.int64), separators)
    if buf[:3].tobytes() == BOM:
        separators += BOM  # lines start after a BOM: it must not glue onto the first token
    # scan only the bytes of these lines (and the separator after the last), so a chunk of lines
    # costs memory in proportion to its own text
    lo = int(lines.start.min())
    hi = int(lines.end.max()) + 1
    word = ~_table(separators + b"\r\n")[buf[lo:hi]]
    # token boundaries are where word-ness changes; the scanned bytes end in a separator, so they
    # alternate start, end, start, end ...
    boundaries = np.flatnonzero(word[1:] != word[:-1]) + (lo + 1)
    if word[0]:
        boundaries = np.concatenate(([lo], boundaries))
    del word
    starts, ends = boundaries[0::2].copy(), boundaries[1::2].copy()
    del boundaries
    # lines start and end at separators (newlines, or the separators their parent tokens were cut
    # at), so the tokens of a line are those starting inside it: two binary searches per line
    first = np.searchsorted(starts, lines.start, side="left")
    count = np.searchsorted(starts, lines.end, side="left") - first
    return Tokens(lines, first, count, starts, ends, separators)


def gather(buf: np.ndarray, start: np.ndarray, length: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``buf[start:start+length]`` of every row as an ``S<w>`` array (w <= width), and whether it fitted.

    ``buf`` must be followed by ``PAD`` spare bytes (``split_lines`` adds them) when ``width <= PAD``.
    """
    length = np.asarray(length, dtype=np.int64)
    fits = length <= width
    w = int(min(length.max(initial=0), width)) or 1
    if len(start) == 0:
        return np.zeros(0, dtype=f"S{w}"), fits
    shown = np.minimum(length, w)
    some = shown > 0
    if not some.all() and np.count_nonzero(some) < len(shown) // 2:
        # mostly empty (a column only some rows have): gather just those rows
        out = np.zeros(len(shown), dtype=f"S{w}")
        rows = np.flatnonzero(some)
        if len(rows):
            out[rows] = gather(buf, np.asarray(start)[rows], shown[rows], w)[0]
        return out, fits
    if w <= PAD:
        # a (len, w) sliding window over the buffer: row i is buf[i:i+w], so gathering rows copies
        # w bytes per frame without building an index matrix
        window = np.lib.stride_tricks.as_strided(buf, shape=(len(buf) - w + 1, w), strides=(1, 1), writeable=False)
        chars = window[np.asarray(start, dtype=np.intp)]
        chars *= np.arange(w, dtype=np.uint8)[None, :] < shown.astype(np.uint8)[:, None]
    else:
        offsets = np.arange(w, dtype=np.int64)
        index = np.minimum(start[:, None] + offsets, len(buf) - 1)
        chars = buf[index]
        chars[offsets[None, :] >= shown[:, None]] = 0
    return chars.view(f"S{w}").reshape(-1), fits


_DIGIT = np.full(256, 255, dtype=np.uint8)
for _value, _char in enumerate(b"0123456789abcdef"):
    _DIGIT[_char] = _value
    _DIGIT[ord(chr(_char).upper())] = _value


def parse_uint(strings: np.ndarray, base: int = 10, max_digits: int = 18) -> tuple[np.ndarray, np.ndarray]:
    """Unsigned integers in ``base`` (10 or 16, no prefix or sign) → uint64 values and a validity mask."""
    n = len(strings)
    width = strings.dtype.itemsize
    if n == 0 or width == 0:
        return np.zeros(n, np.uint64), np.zeros(n, bool)
    raw = np.ascontiguousarray(strings).view(np.uint8).reshape(n, width)
    digits = _DIGIT[raw]
    lengths = (raw != 0).sum(axis=1)
    in_string = np.arange(width)[None, :] < lengths[:, None]
    valid = (lengths > 0) & (lengths <= max_digits) & ~((digits >= base) & in_string).any(axis=1)
    values = np.zeros(n, np.uint64)
    for position in range(min(width, max_digits)):
        step = in_string[:, position]
        values = np.where(step, values * np.uint64(base) + digits[:, position], values)
    return values, valid


def parse_fraction(strings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decimal digits after a point (``"532"`` → 0.532, ``"5320"`` → 0.532) → float64 and validity."""
    values, valid = parse_uint(strings, 10, max_digits=12)
    lengths = np.char.str_len(strings) if len(strings) else np.zeros(0, np.int64)
    return values / np.power(10.0, lengths), valid


@attrs.define
class RowChecks:
    """Per-row problems, kept in order of checking; each row keeps only its first problem."""

    lines: Lines
    problem: np.ndarray = attrs.field(init=False)
    checks: list = attrs.field(init=False, factory=list)

    def __attrs_post_init__(self):
        self.problem = np.full(len(self.lines), -1, dtype=np.int32)

    @property
    def ok(self) -> np.ndarray:
        return self.problem < 0

    def require(self, ok: np.ndarray, field: str, reason: str, shown=None) -> None:
        """Rows where ``ok`` is false (and no earlier problem) get this one.

        ``shown``: the values to quote (an array, or a function making it, called only if a row is
        bad); by default the whole line.
        """
        new = ~ok & (self.problem < 0)
        if new.any():
            self.problem[new] = len(self.checks)
            self.checks.append((field, reason, shown))
        else:
            self.checks.append(None)

    def report(self, errors: RowErrors) -> np.ndarray:
        """Report every bad row in line order (``error`` mode raises at the first); the valid mask."""
        for i in errors.to_report(np.flatnonzero(self.problem >= 0)):
            check = self.problem[i]
            field, reason, shown = self.checks[check]
            if callable(shown):
                shown = shown()
                self.checks[check] = (field, reason, shown)
            if shown is None:
                value = self.lines.text(i)
            else:
                value = shown[i]
                value = value.decode(errors="replace") if isinstance(value, bytes) else value
            errors.bad(int(self.lines.number[i]), field, f"{reason}: {value!r}")
        return self.problem < 0


def parse_id_column(tokens: Tokens, k: int, base: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Token ``k`` as a CAN ID (hex with an optional ``0x``, or decimal): uint32 values and validity."""
    buf = tokens.lines.buf
    start, length = tokens.span(k)
    fits = length <= 12
    if base == 16:
        prefixed = (length > 2) & (buf[start] == ord("0")) & ((buf[start + 1] | 0x20) == ord("x"))
        if prefixed.any():
            start, length = start + 2 * prefixed, length - 2 * prefixed
    digits, fits_digits = gather(buf, start, length, 8 if base == 16 else 9)
    values, ok = parse_uint(digits, base, max_digits=8 if base == 16 else 9)
    ok &= fits & fits_digits & (values <= 0x1FFFFFFF)
    return values.astype(np.uint32), ok


def frame_columns(
    tokens: Tokens,
    checks: RowChecks,
    id_at: int,
    dlc_at: int,
    data_at: int,
    fields: int,
    base: int = 16,
    remote: np.ndarray | None = None,
    remote_fields: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CAN ID, DLC and payload of rows laid out as ``... ID ... DLC byte byte ...`` (one token each).

    ``fields``: how many tokens a row has besides its data bytes (so a row has ``fields + DLC``);
    ``base``: 16 (hex ID and bytes, ``0x`` prefix allowed on the ID) or 10; ``remote``: rows that
    are remote frames (no data bytes: payload zeros), which have ``remote_fields`` tokens
    (default ``fields + 1``: one marker such as ``RTR`` in place of the data bytes).
    """
    n = len(tokens)
    remote = np.zeros(n, dtype=bool) if remote is None else remote
    dlc_text, _ = tokens.column(dlc_at, 2)
    dlc, ok = parse_uint(dlc_text, 10, max_digits=2)
    ok &= dlc <= 8
    checks.require(ok, "dlc", "expected a DLC of 0-8", dlc_text)
    dlc = np.where(ok, dlc, 0).astype(np.int64)
    data_dlc = np.where(remote, 0, dlc)
    expected = np.where(remote, fields + 1 if remote_fields is None else remote_fields, fields + dlc)
    checks.require(tokens.count == expected, "row", "the number of data bytes does not match the DLC")

    can_id, ok = parse_id_column(tokens, id_at, base)
    checks.require(ok, "can_id", f"not a {'hex' if base == 16 else 'decimal'} CAN ID", lambda: tokens.column(id_at, 12)[0])

    width = 2 if base == 16 else 3
    payload = np.zeros((n, 8), dtype=np.uint8)
    bad = np.zeros((n, 8), dtype=bool)
    for k in range(8):
        present = k < data_dlc
        if not present.any():
            break
        text, fits = tokens.column(np.where(present, data_at + k, tokens.count), width)
        values, ok = parse_uint(text, base, max_digits=width)
        payload[:, k] = values
        bad[:, k] = present & ~(ok & fits & (values <= 255))

    def first_bad():
        column = np.argmax(bad, axis=1)
        return tokens.column(np.where(bad.any(axis=1), data_at + column, tokens.count), 8)[0]

    checks.require(~bad.any(axis=1), "data", f"not a {'hex' if base == 16 else 'decimal'} byte", first_bad)
    return can_id, dlc.astype(np.uint8), payload


CHUNK_LINES = 1 << 19
CHUNK_BYTES = 1 << 25  # and at most this much text per chunk (one line may be longer, up to MAX_LINE_BYTES)
MAX_LINE_BYTES = 1 << 16  # no row of any format comes near this; a longer line is a bad row, left unparsed


def read_chunks(lines: Lines, read_chunk, errors: RowErrors, chunk_lines: int | None = None) -> FrameTable:
    """``read_chunk(lines)`` on consecutive chunks of lines, the tables concatenated.

    Bounds the scanner's working memory (several times the text of one chunk, not of the whole
    file); bad rows are still reported in line order, and ``bad_rows`` counts them all. A line
    longer than ``MAX_LINE_BYTES`` is reported as a bad row without being tokenized: its tokens
    would cost many times its size (a hostile or corrupt file can be one line of tens of MB).
    """
    chunk_lines = chunk_lines or CHUNK_LINES
    tables = [read_chunk(chunk) for chunk in _chunks(lines, chunk_lines, errors)]
    table = tables[0] if len(tables) == 1 else FrameTable.concat(tables) if tables else FrameTable.empty()
    return attrs.evolve(table, bad_rows=errors.skipped)


def _chunks(lines: Lines, chunk_lines: int, errors: RowErrors):
    """Consecutive chunks of at most ``chunk_lines`` lines and about ``CHUNK_BYTES`` of text; each
    over-long line is reported between the chunks before and after it, so in line order."""
    start = 0
    while start < len(lines):
        by_bytes = int(np.searchsorted(lines.end, lines.start[start] + CHUNK_BYTES, side="right"))
        stop = min(start + chunk_lines, len(lines), max(by_bytes, start + 1))
        too_long = np.flatnonzero(lines.end[start:stop] - lines.start[start:stop] > MAX_LINE_BYTES)
        if len(too_long) == 0:
            yield lines.take(slice(start, stop))
            start = stop
            continue
        long_line = start + int(too_long[0])
        if long_line > start:
            yield lines.take(slice(start, long_line))
        length = int(lines.end[long_line] - lines.start[long_line])
        errors.bad(int(lines.number[long_line]), "row", f"a line of {length} bytes, longer than any row ({MAX_LINE_BYTES} at most): {lines.text(long_line)!r}")
        start = long_line + 1


def head_lines(head: bytes, limit: int = 20) -> list[bytes]:
    """The first complete, non-blank lines of a file's head (a cut-off last line is left out)."""
    head = head[3:] if head.startswith(BOM) else head
    lines = head.split(b"\n")
    if len(lines) > 1 and not head.endswith(b"\n"):
        lines = lines[:-1]
    stripped = (line.strip() for line in lines)
    return [line for line in stripped if line][:limit]


def sniff_rows(head: bytes, pattern: re.Pattern, skip=None, limit: int = 10) -> bool:
    """Whether most (at least half, and at least one) of the first rows match ``pattern``.

    ``skip``: a predicate for header/comment lines that are not rows.
    """
    rows = [line for line in head_lines(head, 200) if not (skip and skip(line))][:limit]
    if not rows:
        return False
    matches = sum(1 for row in rows if pattern.match(row))
    return matches >= 1 and 2 * matches >= len(rows)


# --- formatting: numpy columns to fixed-width text ------------------------------------------------

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
