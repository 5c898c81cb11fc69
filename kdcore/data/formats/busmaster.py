"""``busmaster``: logs of the BUSMASTER 3.x CAN tool (ETAS/RBEI, open source).

::

    ***BUSMASTER Ver 3.2.0***
    ***START DATE AND TIME 13:5:2025 17:27:45:532***     (often left empty: ***START DATE AND TIME ***)
    ***HEX***                                             (or ***DEC***: IDs and bytes in decimal)
    ***SYSTEM MODE***                                     (or ABSOLUTE / RELATIVE)
    ***<Time><Tx/Rx><Channel><CAN ID><Type><DLC><DataBytes>***
    17:27:45:532 Rx 1 0x158 s 8 00 00 00 00 00 00 00 28

Header and footer lines are ``***...***``. Type ``s``/``x`` is a standard/extended data frame,
``sr``/``xr`` a remote frame (no data bytes: payload zeros). The time ``hh:mm:ss:f`` has a
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

from kdcore.data.formats.base import CaptureFormat
from kdcore.data.formats.textscan import (
    Lines,
    RowChecks,
    frame_columns,
    head_lines,
    parse_fraction,
    parse_uint,
    read_chunks,
    read_lines,
    tokenize,
)
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
        lines = read_lines(path)
        header = lines.buf[: min(len(lines.buf), 1 << 16)].tobytes()
        start = _start(header, path)
        mode = _MODE.search(header)
        mode = mode.group(1).decode() if mode else "SYSTEM"
        numbers = _NUMBERS.search(header)
        base = 10 if numbers and numbers.group(1) == b"DEC" else 16
        # chunks give each frame's hh:mm:ss:f in seconds; the mode turns them into timestamps
        table = read_chunks(lines, lambda chunk: self._read_lines(chunk, errors, mode, base), errors)
        seconds = table.timestamp
        if mode == "SYSTEM":
            rollover = np.concatenate(([0], np.cumsum(np.diff(seconds) < -DAY / 2))) if len(seconds) else 0
            origin = start.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() if start else 0.0
            timestamp = origin + seconds + rollover * DAY
        elif mode == "ABSOLUTE":
            timestamp = (start.timestamp() if start else 0.0) + seconds
        else:  # RELATIVE: each time is the gap since the previous frame
            timestamp = (start.timestamp() if start else 0.0) + np.cumsum(seconds)
        return attrs.evolve(table, timestamp=timestamp)

    def _read_lines(self, lines: Lines, errors: RowErrors, mode: str, base: int) -> FrameTable:
        tokens = tokenize(lines)
        tokens = tokens.take(tokens.count > 0)
        first, _ = tokens.span(0)
        buf = tokens.lines.buf
        starred = (buf[first] == ord("*")) & (buf[first + 1] == ord("*")) & (buf[first + 2] == ord("*"))
        tokens = tokens.take(~starred)  # header and footer lines
        if len(tokens) == 0:
            return FrameTable.empty()

        checks = RowChecks(tokens.lines)
        checks.require(tokens.count >= 6, "row", "expected 'time Tx/Rx channel ID type DLC data...'")

        def time_text():
            return tokens.column(0, 20)[0]

        parts = tokens.subtokens(0, b":")
        values = []
        for k, (field_max, width) in enumerate(((23 if mode == "SYSTEM" else 10**6, 9), (59, 2), (59, 2))):
            text, fits = parts.column(k, width)
            value, ok = parse_uint(text, 10)
            values.append(value.astype(np.float64))
            checks.require(ok & fits & (value <= field_max) & (parts.count == 4), "time", "expected hh:mm:ss:ms", time_text)
        fraction_text, fits = parts.column(3, 12)
        fraction, ok = parse_fraction(fraction_text)
        checks.require(ok & fits, "time", "expected hh:mm:ss:ms", time_text)
        seconds = values[0] * 3600 + values[1] * 60 + values[2] + fraction

        direction, _ = tokens.column(1, 3)
        checks.require(np.isin(direction, (b"Rx", b"Tx")), "direction", "expected Rx or Tx", direction)
        kind, _ = tokens.column(4, 3)
        checks.require(np.isin(kind, (b"s", b"x", b"sr", b"xr")), "type", "expected s, x, sr or xr", kind)
        remote = (kind == b"sr") | (kind == b"xr")
        can_id, dlc, payload = frame_columns(
            tokens, checks, id_at=3, dlc_at=5, data_at=6, fields=6, base=base, remote=remote, remote_fields=6
        )
        valid = checks.report(errors)
        return FrameTable.from_frames(seconds[valid], can_id[valid], dlc[valid], payload[valid])
