"""``busmaster``: logs of the BUSMASTER 3.x CAN tool (ETAS/RBEI, open source).

::

    ***BUSMASTER Ver 3.2.0***
    ***START DATE AND TIME 13:5:2025 17:27:45:532***     (often left empty: ***START DATE AND TIME ***)
    ***HEX***                                             (or ***DEC***: IDs and bytes in decimal)
    ***SYSTEM MODE***                                     (or ABSOLUTE / RELATIVE)
    ***<Time><Tx/Rx><Channel><CAN ID><Type><DLC><DataBytes>***
    17:27:45:532 Rx 1 0x158 s 8 00 00 00 00 00 00 00 28

Header and footer lines are ``***...***``. Type ``s``/``x`` is a standard/extended data frame,
``sr``/``xr`` a remote frame (no data bytes: payload zeros), which sets the table's ``extended``
and ``remote`` flags. The time ``hh:mm:ss:f`` has a
fraction of as many digits as written (``532`` → 0.532 s, ``5320`` → 0.532 s). Timestamps:

- SYSTEM mode (the default): time of day. With a start date, absolute Unix seconds (the date's
  midnight, read as UTC, plus the time of day, a day later after each midnight rollover); with
  an empty start date, seconds since midnight.
- ABSOLUTE mode: time since logging started, added to the start date-and-time when present.
- RELATIVE mode: time since the previous frame; summed up.

Detected by the ``***BUSMASTER`` first line, whatever the file is named (a ``.log`` BUSMASTER
file is not a candump log). BUSMASTER logs carry no labels: use an attack sidecar.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import attrs
import numpy as np

from kdcore.data.formats.base import CaptureFormat, TextFormat
from kdcore.data.formats.text import Fields, Lines, Problems, frame_fields, head_lines, read_head, split_rows
from kdcore.data.frames import FrameTable, RowErrors
from kdcore.errors import KdcoreError

_START = re.compile(
    rb"^\*\*\*START DATE AND TIME\s*(\d{1,2}):(\d{1,2}):(\d{4})\s+(\d{1,2}):(\d{1,2}):(\d{1,2})(?::(\d{1,9}))?\s*\*\*\*",
    re.MULTILINE,
)
_START_LINE = re.compile(rb"^\*\*\*START DATE AND TIME(.*?)\*\*\*", re.MULTILINE)
_MODE = re.compile(rb"^\*\*\*(SYSTEM|ABSOLUTE|RELATIVE) MODE\*\*\*", re.MULTILINE)
_NUMBERS = re.compile(rb"^\*\*\*(HEX|DEC)\*\*\*", re.MULTILINE)
DAY = 86400.0


def _start(header: bytes, path: Path) -> datetime | None:
    """The start date and time in the header, as UTC; ``None`` when the header leaves it empty."""
    match = _START.search(header)
    if match is None:
        line = _START_LINE.search(header)
        if line and line.group(1).strip():
            number = header[: line.start()].count(b"\n") + 1
            raise KdcoreError(f"{path}:{number}: start date: expected dd:mm:yyyy hh:mm:ss:ms, got {line.group(1).strip().decode(errors='replace')!r}")
        return None
    day, month, year, hour, minute, second = (int(group) for group in match.groups()[:6])
    fraction = match.group(7) or b"0"
    try:
        start = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError as exc:
        number = header[: match.start()].count(b"\n") + 1
        raise KdcoreError(f"{path}:{number}: start date: {exc}") from None
    return start.replace(microsecond=int(round(int(fraction) / 10 ** len(fraction) * 1e6)) % 1_000_000)


class Busmaster(CaptureFormat):
    name = "busmaster"
    priority = 80
    description = "BUSMASTER 3.x log: ***BUSMASTER*** header, rows 'hh:mm:ss:ms Rx 1 0x158 s 8 00 ...'"
    suffixes = (".log",)

    def sniff(self, head: bytes, path: Path) -> bool:
        lines = head_lines(head, 1)
        return bool(lines) and lines[0].upper().startswith(b"***BUSMASTER")

    def read(self, path: Path, errors: RowErrors) -> FrameTable:
        """The rows give each frame's clock time in seconds; the header's mode turns them into timestamps."""
        header = read_head(path)
        start = _start(header, path)
        table = _BusmasterRows().read(path, errors)
        seconds = table.timestamp
        mode = _settings(header).mode
        if mode == "SYSTEM":
            rollover = np.concatenate(([0], np.cumsum(np.diff(seconds) < -DAY / 2))) if len(seconds) else 0
            origin = start.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() if start else 0.0
            timestamp = origin + seconds + rollover * DAY
        elif mode == "ABSOLUTE":
            timestamp = (start.timestamp() if start else 0.0) + seconds
        else:  # RELATIVE: each time is the gap since the previous frame
            timestamp = (start.timestamp() if start else 0.0) + np.cumsum(seconds)
        return attrs.evolve(table, timestamp=timestamp)


@attrs.frozen
class _Settings:
    mode: str  # SYSTEM, ABSOLUTE or RELATIVE
    base: int  # of IDs and bytes: 16 or 10


def _settings(header: bytes) -> _Settings:
    mode = _MODE.search(header)
    numbers = _NUMBERS.search(header)
    return _Settings(mode.group(1).decode() if mode else "SYSTEM", 10 if numbers and numbers.group(1) == b"DEC" else 16)


class _BusmasterRows(TextFormat):
    """The frames of a BUSMASTER log, each with its ``hh:mm:ss:f`` in seconds as its timestamp."""

    def settings(self, path: Path, head: bytes) -> _Settings:
        return _settings(head)

    def parse(self, lines: Lines, settings: _Settings, errors: RowErrors) -> FrameTable:
        rows = split_rows(lines)
        rows = rows.take(~rows.field(0).startswith(b"***"))  # header and footer lines
        problems = Problems(rows)
        problems.require(rows.count >= 6, "row", "expected 'time Tx/Rx channel ID type DLC data...'")
        seconds = _clock(rows.field(0), problems, 23 if settings.mode == "SYSTEM" else 10**9 - 1)
        direction = rows.field(1)
        problems.require(direction.equals(b"Rx") | direction.equals(b"Tx"), "direction", "expected Rx or Tx", direction)
        kind = rows.field(4)
        remote = kind.equals(b"sr") | kind.equals(b"xr")
        problems.require(kind.equals(b"s") | kind.equals(b"x") | remote, "type", "expected s, x, sr or xr", kind)
        can_id, dlc, payload = frame_fields(rows, problems, id_at=3, dlc_at=5, data_at=6, fields=6, base=settings.base, remote=remote, remote_fields=6)
        valid = problems.report(errors)
        extended = kind.first() == ord("x")
        table = FrameTable.from_frames(seconds, can_id, dlc, payload, extended=extended, remote=remote)
        return table if valid.all() else table.take(valid)


def _clock(field: Fields, problems: Problems, max_hours: int) -> np.ndarray:
    """``hh:mm:ss:f`` → seconds; the fraction ``f`` has as many digits as written."""
    seconds = np.zeros(len(field))
    ok = np.ones(len(field), dtype=bool)
    rest = field
    for limit, digits, scale in ((max_hours, 9, 3600), (59, 2, 60), (59, 2, 1)):
        at = rest.find(ord(":"))
        part = Fields(rest.data, rest.start, np.where(at >= 0, at, rest.length))
        value, part_ok = part.uint(10, digits, prefix=False)
        ok &= (at >= 0) & part_ok & (value <= limit)
        seconds += value * scale
        rest = rest.cut(front=np.where(at >= 0, at + 1, rest.length))
    fraction, fraction_ok = rest.uint(10, 12, prefix=False)
    ok &= fraction_ok
    problems.require(ok, "time", "expected hh:mm:ss:ms", field)
    return seconds + fraction / 10.0 ** rest.length
