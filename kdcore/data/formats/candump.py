"""Captures of Linux can-utils ``candump``: its log files, its console output, and the
``LABEL ID#DATA`` logs made from them.

``candump`` — the log of ``candump -l`` / ``candump -L``, one frame a line::

    (1618787934.854636) can0 0C5#3000000030000000     standard ID: 3 hex digits, DLC bytes of hex
    (1618787934.854636) can0 18DAF110#0210030000      extended ID: 8 hex digits
    (1618787934.854636) can0 123#R                    remote frame: DLC 0 (``123#R4``: DLC 4), zero payload
    (1618787934.854636) can0 123##1001122             CAN FD (``##``, a flags digit, data): kept when it has
                                                      0-8 bytes; more is a bad row (tables hold 8 bytes)

An optional fourth field ``R``/``T`` (received/transmitted) is accepted and ignored, as is the
interface name.

``candump_console`` — what ``candump`` prints on the console, with ``-ta``, ``-tz``, ``-td``,
``-tA`` or no ``-t``::

     (000.005001)  can0  18FEDF00   [8]  8A A0 28 7D 7D FF FF F5
     (2021-04-18 19:18:54.854636)  can0  0C5   [8]  30 00 00 00 30 00 00 00
     (000.000412)  can0  123   [2]  remote request
     (000.001234)  can0  20000004   [8]  00 04 00 00 00 00 00 00   ERRORFRAME
                    controller-problem{rx-error-warning}          (-e: decoding lines, indented by a tab)
      can0  0C5   [8]  30 00 00 00 30 00 00 00                      (no -t)

Timestamps: ``-ta`` (Unix seconds) and ``-tz`` (seconds since the first frame) are read as they
are; ``-td`` prints the time since the previous frame, summed up here into a running time; ``-tA``
prints the recorder's local date and time, read as UTC (as the header dates of the other formats;
see docs/formats.md). ``-td`` and ``-tz`` look alike: the capture is read as ``-td`` when its first
timestamp is 0 and the next ones, in the file's first 64 KiB, go down somewhere (a clock never
does); ``CandumpConsole(timing="differences" | "times")`` says it outright. Without timestamps the
frames keep their positions (``timestamps=False``). Tokens between the interface and the ID
(``-x``: direction and flags) and after the data bytes (``-a``: the ASCII column) are passed over.

``labelled_candump`` — ``LABEL ID#DATA``, what similarity-CAN-IDS makes of a candump log
(``awk '{print 0,$3}'``), with the label set to 1 for attack frames; no timestamps::

    0 080#0017dc09161116bb
    1 000#0000000000000000

Label 1 is a DoS frame, as that layout defines it (attack type ``dos``).

In all three, a 29-bit ID is written with 8 hex digits (``extended`` whatever its value), an
11-bit one with 3. Error frames (``ERRORFRAME``, or an 8-digit ID carrying ``CAN_ERR_FLAG``
0x20000000) are bus events, not frames of any ECU: they are left out and counted in the table's
``error_frames``. candump captures carry no labels of their own (``labelled_candump`` aside):
every frame is normal unless an attack sidecar (``kdcore.data.formats.labels``) sits next to the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import numpy as np

from kdcore.data.formats.base import TextFormat
from kdcore.data.formats.text import MAX_ID, Fields, Lines, Problems, Rows, byte_fields, head_lines, sniff_rows, split_rows
from kdcore.data.frames import NORMAL, FrameTable, RowErrors

CAN_ERR_FLAG = 0x20000000
_LOG_ROW = re.compile(rb"^\(\s*\d+(\.\d*)?\)\s+\S+\s+[0-9A-Fa-f]{1,8}#")
_CONSOLE_ROW = re.compile(rb"^(\([^)]*\)\s+)?\S+\s+(\S+\s+){0,3}[0-9A-Fa-f]{3,8}\s+\[\d{1,2}\]")
_LABELLED_ROW = re.compile(rb"^[01]\s+[0-9A-Fa-f]{1,8}#[0-9A-Fa-f]*$")
_DATE = re.compile(rb"^\(\d{4}-\d\d-\d\d$")
TIMINGS = ("auto", "times", "differences")


@attrs.frozen
class _Frames:
    can_id: np.ndarray
    dlc: np.ndarray
    payload: np.ndarray
    extended: np.ndarray
    remote: np.ndarray
    error: np.ndarray  # error frames: left out of the table


def _id_and_data(field: Fields, problems: Problems) -> _Frames:
    """Frames written ``ID#DATA`` (candump's log): ``ID#R``/``ID#R<DLC>`` remote frames,
    ``ID##<flags><data>`` CAN FD frames of 0-8 bytes."""
    hash_at = field.find(ord("#"))
    problems.require(hash_at >= 0, "frame", "expected ID#data", field)
    ids = Fields(field.data, field.start, np.maximum(hash_at, 0))
    can_id, ok = ids.uint(16, 8, prefix=False)
    problems.require(ok, "can_id", "not a hex CAN ID of 1-8 digits", ids)
    error = ok & ((can_id & CAN_ERR_FLAG) != 0) & (ids.length == 8)
    problems.require((can_id <= MAX_ID) | error, "can_id", "more than 29 bits", ids)

    data = field.cut(front=np.where(hash_at >= 0, hash_at + 1, field.length))
    marker = data.first()
    fd = marker == ord("#")
    flags = Fields(data.data, data.start + 1, np.clip(data.length - 1, 0, 1))
    _, ok = flags.uint(16, 1, prefix=False)
    problems.require(ok | ~fd, "data", "CAN FD frame: expected ID##<flags digit><data>", field)
    data = data.cut(front=np.where(fd, 2, 0))
    problems.require(~fd | (data.length <= 16), "data", "CAN FD frame with more than 8 data bytes: kdcore tables hold 0-8", field)
    remote = (marker == ord("R")) | (marker == ord("r"))
    remote_dlc, ok = data.cut(front=1).uint(10, 1, prefix=False)
    ok = (ok & (remote_dlc <= 8)) | (data.length == 1)
    problems.require(ok | ~remote, "data", "remote frame: expected R or R<DLC 0-8>", field)
    payload, dlc, ok = data.payload()
    problems.require(ok | remote, "data", "not a hex payload of 0-8 bytes", data)
    dlc = np.where(remote, np.where(data.length > 1, remote_dlc, 0), dlc).astype(np.uint8)
    payload[remote] = 0
    return _Frames(can_id, dlc, payload, ids.length > 3, remote, error)


def _table(frames: _Frames, valid: np.ndarray, timestamp: np.ndarray | None, **labels) -> FrameTable:
    """The valid data frames (error frames counted, not kept)."""
    keep = valid & ~frames.error
    table = FrameTable.from_frames(
        timestamp, frames.can_id, frames.dlc, frames.payload, extended=frames.extended, remote=frames.remote,
        error_frames=int((valid & frames.error).sum()), **labels,
    )
    table = table if keep.all() else table.take(keep)
    return table if timestamp is not None else table.with_positions()


class Candump(TextFormat):
    name = "candump"
    priority = 10
    description = "Linux can-utils candump log: (timestamp) interface ID#DATA"
    suffixes = (".log",)

    def sniff(self, head: bytes, path: Path) -> bool:
        return sniff_rows(head, _LOG_ROW)

    def parse(self, lines: Lines, settings, errors: RowErrors) -> FrameTable:
        rows = split_rows(lines)
        problems = Problems(rows)
        problems.require((rows.count == 3) | (rows.count == 4), "row", "expected '(timestamp) interface ID#data'")
        timestamp = _parenthesised_seconds(rows.field(0), problems)
        frames = _id_and_data(rows.field(2), problems)
        direction = rows.field(3)
        known = direction.equals(b"R") | direction.equals(b"T") | direction.equals(b"r") | direction.equals(b"t")
        problems.require((rows.count != 4) | known, "direction", "expected R or T", direction)
        return _table(frames, problems.report(errors), timestamp)


def _parenthesised_seconds(field: Fields, problems: Problems) -> np.ndarray:
    """``(seconds)`` → seconds."""
    problems.require((field.length >= 3) & (field.first() == ord("(")) & (field.last() == ord(")")), "timestamp", "expected '(seconds)'", field)
    seconds = field.cut(1, 1)
    timestamp, ok = seconds.floats()
    problems.require(ok, "timestamp", "not a finite number", seconds)
    return timestamp


@attrs.frozen
class _Timing:
    fields: int  # tokens the timestamp takes: 0 (no -t), 1, or 2 (-tA: date and time)
    differences: bool  # -td


class CandumpConsole(TextFormat):
    name = "candump_console"
    priority = 20
    description = "candump console output: (timestamp)  interface  ID  [DLC]  bytes (-ta/-tz/-td/-tA or no -t)"
    suffixes = (".log", ".txt")

    def __init__(self, timing: str = "auto"):
        if timing not in TIMINGS:
            raise ValueError(f"timing must be one of {', '.join(TIMINGS)}, got {timing!r}")
        self.timing = timing

    def sniff(self, head: bytes, path: Path) -> bool:
        return sniff_rows(head, _CONSOLE_ROW)

    def settings(self, path: Path, head: bytes) -> _Timing:
        rows = [line.split() for line in head_lines(head, 2000) if line.startswith(b"(")]
        if not rows:
            return _Timing(0, False)
        if _DATE.match(rows[0][0]):
            return _Timing(2, False)
        if self.timing != "auto":
            return _Timing(1, self.timing == "differences")
        times = []
        for row in rows:
            try:
                times.append(float(row[0].strip(b"()")))
            except ValueError:
                continue
        return _Timing(1, bool(times) and times[0] == 0.0 and any(b < a for a, b in zip(times, times[1:])))

    def time_differences(self, timing: _Timing) -> bool:
        return timing.differences

    def parse(self, lines: Lines, timing: _Timing, errors: RowErrors) -> FrameTable:
        rows = split_rows(lines)
        decoding = lines.first_bytes()[rows.index] == ord("\t")  # -e: an error frame's decoding
        rows = rows.take(~decoding) if decoding.any() else rows
        problems = Problems(rows)
        timestamp = self._timestamps(rows, timing, problems)
        at = timing.fields + 1  # the token after the interface
        brackets = [rows.field(k).first() == ord("[") for k in range(at + 1, at + 5)]
        found = np.any(brackets, axis=0) if brackets else np.zeros(len(rows), dtype=bool)
        dlc_at = at + 1 + np.argmax(brackets, axis=0) if brackets else np.zeros(len(rows), dtype=np.int64)
        problems.require(found, "row", "expected '(timestamp) interface ID [DLC] data'")
        ids = rows.field(dlc_at - 1)
        can_id, ok = ids.uint(16, 8, prefix=False)
        problems.require(ok, "can_id", "not a hex CAN ID of 1-8 digits", ids)
        last = rows.field(-1)
        error = last.equals(b"ERRORFRAME") | (ok & ((can_id & CAN_ERR_FLAG) != 0) & (ids.length == 8))
        problems.require((can_id <= MAX_ID) | error, "can_id", "more than 29 bits", ids)
        field = rows.field(dlc_at)
        dlc, ok = field.cut(1, 1).uint(10, 2, prefix=False)
        ok &= (field.last() == ord("]")) & (field.length <= 4)
        problems.require(ok, "dlc", "expected [DLC]", field)
        problems.require(~ok | (dlc <= 8), "dlc", "CAN FD frame with more than 8 data bytes: kdcore tables hold 0-8", field)
        dlc = np.where(ok & (dlc <= 8), dlc, 0)
        remote = rows.field(dlc_at + 1).equals(b"remote") & rows.field(dlc_at + 2).equals(b"request")
        data_dlc = np.where(remote, 0, dlc)
        problems.require(rows.count >= dlc_at + 1 + data_dlc, "row", "fewer data bytes than the DLC says")
        payload = byte_fields(rows, [dlc_at + 1 + k for k in range(8)], data_dlc, 16, problems)
        frames = _Frames(can_id, dlc.astype(np.uint8), payload, ids.length > 3, remote, error)
        return _table(frames, problems.report(errors), timestamp)

    def _timestamps(self, rows: Rows, timing: _Timing, problems: Problems) -> np.ndarray | None:
        if timing.fields == 0:
            return None
        if timing.fields == 1:
            return _parenthesised_seconds(rows.field(0), problems)
        return _date_and_time(rows.field(0), rows.field(1), problems)


def _date_and_time(date: Fields, clock: Fields, problems: Problems) -> np.ndarray:
    """``(2021-04-18`` and ``19:18:54.854636)`` → Unix seconds, reading the date and time as UTC."""
    import pyarrow as pa
    import pyarrow.compute as pc

    dot = clock.find(ord("."))
    whole = Fields(clock.data, clock.start, np.where(dot >= 0, dot, 0))
    fraction = Fields(clock.data, clock.start + dot + 1, np.maximum(clock.length - dot - 2, 0))
    text = pc.binary_join_element_wise(date.cut(front=1).arrow(), whole.arrow(), pa.scalar(" ", pa.large_string()))
    seconds = pc.strptime(text, format="%Y-%m-%d %H:%M:%S", unit="s", error_is_null=True)
    ok = seconds.is_valid().to_numpy(zero_copy_only=False) & (date.first() == ord("(")) & (clock.last() == ord(")"))
    micros, fraction_ok = fraction.uint(10, 9, prefix=False)
    ok &= (dot >= 0) & fraction_ok
    problems.require(ok, "timestamp", "expected '(yyyy-mm-dd hh:mm:ss.ffffff)'", lambda i: f"{date.text(i)} {clock.text(i)}")
    seconds = pc.fill_null(seconds.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
    return seconds + micros / 10.0 ** np.maximum(fraction.length, 0)


class LabelledCandump(TextFormat):
    name = "labelled_candump"
    priority = 20
    description = "labelled candump frames: LABEL ID#DATA (0 normal, 1 DoS), no timestamp"
    suffixes = (".log", ".txt")
    carries_labels = True
    attack = "dos"

    def sniff(self, head: bytes, path: Path) -> bool:
        return sniff_rows(head, _LABELLED_ROW)

    def parse(self, lines: Lines, settings, errors: RowErrors) -> FrameTable:
        rows = split_rows(lines)
        problems = Problems(rows)
        problems.require(rows.count == 2, "row", "expected 'LABEL ID#DATA'")
        field = rows.field(0)
        label, ok = field.uint(10, 1, prefix=False)
        problems.require(ok & (label <= 1), "label", "expected 0 or 1", field)
        frames = _id_and_data(rows.field(1), problems)
        label = np.where(label == 1, 1, 0)
        return _table(frames, problems.report(errors), None, label=label, attack_type=label, attack_names=(NORMAL, self.attack))
