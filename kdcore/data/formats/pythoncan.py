"""Captures read through python-can: Vector ``asc`` and ``blf``, and PCAN traces other than v1.1.

python-can makes one ``can.Message`` per frame, so these readers are much slower than the text
engine's (see ``benchmarks/bench_readers.py``); this module, and python-can with it, is imported
only when such a capture is read. python-can does not report line numbers, so they are counted
here: a bad text row is named by its line, a bad ``blf`` object by its ordinal number among the
file's frames (``path:N: object: ...``). After a bad text row, ``skip`` mode carries on with the
next line; a corrupt ``blf`` object cannot be skipped over, so there ``skip`` counts one bad row
and keeps the frames before it.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import can
import numpy as np
from can.io.blf import LOG_CONTAINER, LOG_CONTAINER_STRUCT, NO_COMPRESSION, OBJ_HEADER_BASE_STRUCT, ZLIB_DEFLATE, BLFParseError

from kdcore.data.frames import FrameTable, RowErrors
from kdcore.errors import KdcoreError

_PARSE_ERRORS = (ValueError, IndexError, KeyError, TypeError, OverflowError, struct.error, zlib.error)
MAX_LINE_CHARS = 1 << 16  # no row of any format comes near this; a longer line is a bad row
MAX_BLF_CONTAINER = 1 << 22  # bytes a BLF container may inflate to (writers use ~128 KiB)
MAX_CAN_ID = 0x1FFFFFFF


def read_asc(path: Path, errors: RowErrors) -> FrameTable:
    return read_messages(path, errors, lambda lines, previous: _AscReader(lines, previous))


def read_trc(path: Path, errors: RowErrors) -> FrameTable:
    return read_messages(path, errors, lambda lines, previous: _TrcReader(lines, previous))


def read_blf(path: Path, errors: RowErrors) -> FrameTable:
    if path.stat().st_size == 0:
        return FrameTable.empty()
    try:
        can.BLFReader(path).stop()
    except struct.error:
        raise KdcoreError(f"{path}: not a BLF file (its header is cut short)") from None
    except BLFParseError as exc:
        raise KdcoreError(f"{path}: not a BLF file ({exc or 'no LOGG signature'})") from None
    except _PARSE_ERRORS as exc:  # e.g. a header size smaller than the header
        raise KdcoreError(f"{path}: not a BLF file (python-can could not read its header: {type(exc).__name__}: {exc})") from None
    return read_messages(path, errors, lambda lines, previous: _BlfReader(path), text=False)


class LineTooLong(ValueError):
    """A text line longer than ``MAX_LINE_CHARS``: skipped unread, reported as a bad row."""


class CountedLines:
    """A text file's lines for a python-can reader, counted (python-can keeps no line numbers)."""

    def __init__(self, handle):
        self.handle = handle
        self.number = 0
        self.last: str | None = None
        self._pushed: str | None = None

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self._pushed is not None:
            line, self._pushed = self._pushed, None
        else:
            line = self.handle.readline(MAX_LINE_CHARS + 1)
            if not line:
                raise StopIteration
            if len(line) > MAX_LINE_CHARS and not line.endswith("\n"):
                self.number += 1
                self.last = None
                raise LineTooLong(f"a line of {len(line) + self._skip_line()} characters, longer than any row ({MAX_LINE_CHARS} at most)")
        self.number += 1
        self.last = line
        return line

    def _skip_line(self) -> int:
        """Read past the rest of the current line a piece at a time (never holding all of it)."""
        skipped = 0
        while piece := self.handle.readline(MAX_LINE_CHARS):
            skipped += len(piece.rstrip("\n"))
            if piece.endswith("\n"):
                break
        return skipped

    def push_back(self) -> None:
        """Give the last line back: the next ``next`` returns it again."""
        if self.last is not None and self._pushed is None:
            self._pushed = self.last
            self.number -= 1

    def close(self) -> None:
        self.handle.close()

    def __getattr__(self, name):  # readline, read, name, ... for readers that use them
        return getattr(self.handle, name)


class _Frames:
    """Columns accumulated from ``can.Message`` objects."""

    def __init__(self):
        self.timestamp: list[float] = []
        self.can_id: list[int] = []
        self.dlc: list[int] = []
        self.payload: list[bytes] = []
        self.extended: list[bool] = []
        self.remote: list[bool] = []
        self.error_frames = 0

    def add(self, message: can.Message) -> str | None:
        """Add a data frame; a reason when it cannot go in the table; error frames are counted."""
        if message.is_error_frame:
            self.error_frames += 1
            return None
        if not math.isfinite(message.timestamp):
            return f"timestamp not a finite number: {message.timestamp}"
        if not 0 <= message.arbitration_id <= MAX_CAN_ID:
            return f"CAN ID {message.arbitration_id:X}: more than 29 bits"
        if message.dlc < 0:
            return f"negative DLC {message.dlc}"
        data = bytes(message.data or b"")
        if message.is_remote_frame:
            dlc, data = min(message.dlc, 8), b""
        elif len(data) > 8:
            return f"CAN FD frame with {len(data)} data bytes: kdcore tables hold classic CAN frames of 0-8 bytes"
        elif message.dlc > len(data) and not (message.dlc > 8 and len(data) == 8):
            return f"DLC {message.dlc} but {len(data)} data bytes"
        else:
            dlc = len(data)
        self.timestamp.append(message.timestamp)
        self.can_id.append(message.arbitration_id)
        self.dlc.append(dlc)
        self.payload.append(data.ljust(8, b"\0"))
        self.extended.append(message.is_extended_id)
        self.remote.append(message.is_remote_frame)
        return None

    def table(self, bad_rows: int) -> FrameTable:
        payload = np.frombuffer(b"".join(self.payload), dtype=np.uint8).reshape(-1, 8)
        return FrameTable.from_frames(
            np.array(self.timestamp, dtype=np.float64), np.array(self.can_id, dtype=np.uint32),
            np.array(self.dlc, dtype=np.uint8), payload, bad_rows=bad_rows,
            extended=np.array(self.extended, dtype=bool), remote=np.array(self.remote, dtype=bool), error_frames=self.error_frames,
        )


def read_messages(
    path: Path,
    errors: RowErrors,
    make_reader: Callable[[CountedLines | None, can.io.generic.MessageReader | None], can.io.generic.MessageReader],
    text: bool = True,
) -> FrameTable:
    """Frames from a python-can reader, bad rows reported with their line (text) or object number.

    ``make_reader(lines, previous)``: a reader over the counted ``lines`` (text files; ``None`` for
    binary ones); ``previous`` is the reader that failed, for resuming after a bad row (text only).
    """
    frames = _Frames()
    handle = path.open("r", encoding="utf-8", errors="replace") if text else None
    lines = CountedLines(handle) if text else None
    field = "row" if text else "object"
    previous = None
    failed_at = None
    try:
        while True:
            reader = make_reader(lines, previous)
            try:
                for message in reader:
                    reason = frames.add(message)
                    if reason:
                        errors.bad(lines.number if text else len(frames.timestamp) + 1, field, reason)
                break
            except (*_PARSE_ERRORS, BLFParseError) as exc:
                where = lines.number if text else len(frames.timestamp) + 1
                detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if not text:
                    errors.bad(where, field, f"python-can could not read it ({detail}); the rest of the file is unreadable")
                    break
                errors.bad(where, field, str(exc) if isinstance(exc, LineTooLong) else f"python-can could not parse it ({detail})")
                if where == failed_at:  # no progress: the reader fails before reading a line
                    break
                previous, failed_at = reader, where
            finally:
                if not text:
                    reader.stop()
    finally:
        if handle is not None:
            handle.close()
    return frames.table(errors.skipped)


def _utc_timestamp(datetime_string: str) -> float:
    """An asc header date (``Wed Jun 05 00:40:54.420 2024``, English or German months) as UTC seconds."""
    months = {"Jan": 1, "Feb": 2, "Mar": 3, "Apr": 4, "May": 5, "Jun": 6, "Jul": 7, "Aug": 8, "Sep": 9,
              "Oct": 10, "Nov": 11, "Dec": 12, "Mär": 3, "Mai": 5, "Okt": 10, "Dez": 12}
    for name, number in months.items():
        datetime_string = datetime_string.replace(name, f"{number:02d}")
    for pattern in ("%m %d %I:%M:%S.%f %p %Y", "%m %d %I:%M:%S %p %Y", "%m %d %H:%M:%S.%f %Y", "%m %d %H:%M:%S %Y"):
        try:
            return datetime.strptime(datetime_string, pattern).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue
    raise ValueError(f"not an asc date: {datetime_string!r}")


class _AscReader(can.ASCReader):
    """python-can's ASCReader with UTC header dates, no lost first row, and resumable after a bad row."""

    _STATE = ("base", "_converted_base", "start_time", "date", "timestamps_format", "internal_events_logged")

    def __init__(self, lines: CountedLines, previous: can.ASCReader | None = None):
        super().__init__(lines, relative_timestamp=False)
        self._previous = previous

    def _extract_header(self) -> None:
        previous, self._previous = self._previous, None  # kept no longer: a chain of readers would grow per bad row
        if previous is not None:
            for name in self._STATE:
                setattr(self, name, getattr(previous, name))
            return
        super()._extract_header()
        self.file.push_back()  # the line that ended the header may already be a frame

    @staticmethod
    def _datetime_to_timestamp(datetime_string: str) -> float:
        return _utc_timestamp(datetime_string)



class _TrcReader(can.TRCReader):
    """python-can's TRCReader, resumable after a bad row (the header state is carried over), and
    reporting the rows it cannot split into columns (python-can logs and drops them)."""

    _STATE = ("file_version", "_start_time", "columns", "_num_columns")

    def __init__(self, lines: CountedLines, previous: _TrcReader | None = None):
        super().__init__(lines)
        self._previous = previous
        self._header_read = False

    def _extract_header(self):
        previous, self._previous = self._previous, None  # kept no longer: a chain of readers would grow per bad row
        if previous is not None:
            for name in self._STATE:
                setattr(self, name, getattr(previous, name))
            if previous._header_read:
                self._parse_cols = getattr(self, previous._parse_cols.__name__)
                self._header_read = True
                return None
        # the first reader, or the previous one failed on a header line: read (on) through the header
        first_line = super()._extract_header()
        self._header_read = True
        return first_line

    def _parse_line(self, line: str):
        if not line.strip() or line.lstrip().startswith(";"):
            return None  # the last header line of a file with no rows comes here too
        return self._parse_cols(tuple(line.split(maxsplit=self._num_columns)))


class _BlfReader(can.BLFReader):
    """python-can's BLFReader, with memory bounded by ``MAX_BLF_CONTAINER``.

    python-can inflates a container whole (a small file can inflate to gigabytes), keeps the
    bytes of an object that continues into the next container however large the object claims
    to be (every later container is then joined onto them: quadratic time), and reads an object
    of size 0 forever (its next object is itself). Here all three are refused as corrupt objects.
    Containers are walked as python-can does; frames come from its own parser.
    """

    def __iter__(self):
        while head := self.file.read(OBJ_HEADER_BASE_STRUCT.size):
            signature, _, _, size, kind = OBJ_HEADER_BASE_STRUCT.unpack(head)
            if signature != b"LOBJ" or size < OBJ_HEADER_BASE_STRUCT.size:
                raise BLFParseError(f"not an object header: {head!r}")
            body = self.file.read(size - OBJ_HEADER_BASE_STRUCT.size)
            self.file.read(size % 4)  # padding
            if kind != LOG_CONTAINER:
                continue
            method, _ = LOG_CONTAINER_STRUCT.unpack_from(body)
            data = body[LOG_CONTAINER_STRUCT.size :]
            if method == ZLIB_DEFLATE:
                inflater = zlib.decompressobj()
                data = inflater.decompress(data, MAX_BLF_CONTAINER)
                if inflater.unconsumed_tail:
                    raise BLFParseError(f"a container inflating to more than {MAX_BLF_CONTAINER} bytes")
            elif method != NO_COMPRESSION:
                continue  # python-can skips an unknown compression too
            if len(self._tail) > MAX_BLF_CONTAINER:
                raise BLFParseError(f"an object spanning more than {MAX_BLF_CONTAINER} bytes")
            if _meets_empty_object(self._tail + data):
                raise BLFParseError("an object of size 0")
            yield from self._parse_container(data)
        self.stop()


_LOBJ = int.from_bytes(b"LOBJ", "little")


def _meets_empty_object(data: bytes) -> bool:
    """Whether python-can's walk over the objects of a container meets one of size 0.

    Vectorised first: a usual container has no ``LOBJ`` followed by a zero size anywhere. When one
    has (maybe inside some frame's data), the objects are walked one by one, as python-can does.
    """
    if len(data) < 16:
        return False
    words = np.ndarray((len(data) - 3,), dtype="<u4", buffer=data, strides=(1,))
    signatures = np.flatnonzero(words == _LOBJ)
    signatures = signatures[signatures + 8 < len(words)]
    if not (words[signatures + 8] == 0).any():
        return False
    position = 0
    while (position := data.find(b"LOBJ", position, position + 8)) >= 0 and position + 16 <= len(data):
        size = int.from_bytes(data[position + 8 : position + 12], "little")
        if size == 0:
            return True
        position += size
    return False
