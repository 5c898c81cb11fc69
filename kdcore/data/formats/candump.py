"""``candump``: the log files of Linux can-utils ``candump -l`` / ``candump -L``.

One frame per line::

    (1618787934.854636) can0 0C5#3000000030000000     standard ID: 3 hex digits, DLC bytes of hex
    (1618787934.854636) can0 18DAF110#0210030000      extended ID: 8 hex digits
    (1618787934.854636) can0 123#R                    remote frame: DLC 0 (``123#R4``: DLC 4), zero payload
    (1618787934.854636) can0 123##1001122             CAN FD (``##``, a flags digit, data): kept when it has
                                                      0-8 bytes; more is a bad row (tables hold 8 bytes)

An optional fourth field ``R``/``T`` (received/transmitted, written by some tools) is accepted and
ignored, as is the interface name. Error frames (an 8-digit ID carrying ``CAN_ERR_FLAG``
0x20000000) are bus events, not data frames: they are left out, without counting as bad rows.
Blank lines are ignored. candump logs carry no labels: every frame is normal unless an attack
sidecar (``kdcore.data.formats.labels``) sits next to the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from kdcore.atomic import atomic_open
from kdcore.data.formats.base import CaptureFormat
from kdcore.data.formats.hexparse import parse_floats, parse_hex_payload
from kdcore.data.formats.textscan import (
    Lines,
    RowChecks,
    format_fixed,
    format_hex,
    format_payload,
    gather,
    join_rows,
    parse_uint,
    read_chunks,
    read_lines,
    sniff_rows,
    tokenize,
)
from kdcore.data.frames import FrameTable, RowErrors

CAN_ERR_FLAG = 0x20000000
MAX_ID = 0x1FFFFFFF
_ROW = re.compile(rb"^\(\s*\d+(\.\d*)?\)\s+\S+\s+[0-9A-Fa-f]{1,8}#")


class Candump(CaptureFormat):
    name = "candump"
    priority = 10
    description = "Linux can-utils candump log: (timestamp) interface ID#DATA"
    suffixes = (".log",)

    def sniff(self, head: bytes, path: Path) -> bool:
        return sniff_rows(head, _ROW)

    def read(self, path: Path, errors: RowErrors) -> FrameTable:
        return read_chunks(read_lines(path), lambda lines: self._read_lines(lines, errors), errors)

    def _read_lines(self, lines: Lines, errors: RowErrors) -> FrameTable:
        tokens = tokenize(lines)
        tokens = tokens.take(tokens.count > 0)  # blank lines are not rows
        if len(tokens) == 0:
            return FrameTable.empty()
        buf = tokens.lines.buf
        checks = RowChecks(tokens.lines)
        checks.require((tokens.count == 3) | (tokens.count == 4), "row", "expected '(timestamp) interface ID#data'")

        # (timestamp)
        start, length = tokens.span(0)
        last = np.maximum(start + length - 1, 0)
        parenthesised = (length >= 3) & (buf[start] == ord("(")) & (buf[last] == ord(")"))
        checks.require(parenthesised, "timestamp", "expected '(seconds)'", lambda: tokens.column(0, 40)[0])
        timestamp_text, fits = gather(buf, start + 1, np.maximum(length - 2, 0), 32)
        timestamp, ok = parse_floats(timestamp_text)
        checks.require(ok & fits, "timestamp", "not a finite number", timestamp_text)

        # ID#data
        start, length = tokens.span(2)
        def frame_text():
            return tokens.column(2, 40)[0]

        hashes = np.flatnonzero(buf == ord("#"))
        found = np.searchsorted(hashes, start)
        hash_at = hashes[np.minimum(found, len(hashes) - 1)] if len(hashes) else start
        has_hash = (found < len(hashes)) & (hash_at < start + length)
        checks.require(has_hash, "frame", "expected ID#data", frame_text)
        hash_at = np.where(has_hash, hash_at, start)

        id_text, fits = gather(buf, start, hash_at - start, 8)
        raw_id, ok = parse_uint(id_text, 16, max_digits=8)
        checks.require(ok & fits, "can_id", "not a hex CAN ID of 1-8 digits", id_text)
        error_frame = ok & ((raw_id & CAN_ERR_FLAG) != 0) & (np.char.str_len(id_text) == 8)
        checks.require((raw_id <= MAX_ID) | error_frame, "can_id", "more than 29 bits", id_text)

        data_start = hash_at + 1
        data_length = np.maximum(start + length - data_start, 0)
        marker = np.where(data_length > 0, buf[np.minimum(data_start, len(buf) - 1)], 0)
        fd = marker == ord("#")  # ID##<flags><data>
        flags_text, _ = gather(buf, data_start + 1, np.where(fd, np.minimum(data_length - 1, 1), 0), 1)
        _, ok = parse_uint(flags_text, 16)
        checks.require(ok | ~fd, "data", "CAN FD frame: expected ID##<flags digit><data>", frame_text)
        data_start = np.where(fd, data_start + 2, data_start)
        data_length = np.where(fd, np.maximum(data_length - 2, 0), data_length)
        checks.require(~fd | (data_length <= 16), "data", "CAN FD frame with more than 8 data bytes: kdcore tables hold 0-8", frame_text)
        remote = (marker == ord("R")) | (marker == ord("r"))
        remote_text, fits_remote = gather(buf, data_start + 1, np.where(remote, data_length - 1, 0), 1)
        remote_dlc, ok_remote = parse_uint(remote_text, 10)
        ok_remote = (ok_remote & (remote_dlc <= 8) & fits_remote) | (remote_text == b"")
        checks.require(ok_remote | ~remote, "data", "remote frame: expected R or R<DLC 0-8>", frame_text)
        data_text, fits = gather(buf, data_start, np.where(remote, 0, data_length), 16)
        payload, dlc, ok = parse_hex_payload(data_text)
        checks.require((ok & fits) | remote, "data", "not a hex payload of 0-8 bytes", data_text)

        if (tokens.count == 4).any():
            direction, _ = tokens.column(3, 2)
            checks.require((tokens.count == 3) | np.isin(direction, (b"R", b"T", b"r", b"t")), "direction", "expected R or T", direction)

        valid = checks.report(errors)
        keep = valid & ~error_frame
        dlc = np.where(remote, remote_dlc, dlc).astype(np.uint8)
        payload[remote] = 0
        return FrameTable.from_frames(timestamp[keep], raw_id[keep], dlc[keep], payload[keep])


def write_candump(table: FrameTable, path: str | Path, interface: str = "can0") -> None:
    """Write frames as a candump log (``(timestamp) interface ID#DATA``), atomically.

    IDs above 0x7FF are written as extended (8 digits), others as standard (3 digits); the table
    keeps no remote-frame or IDE flag, so a remote frame comes back as data of zeros. Labels are not
    written (candump has no label column): keep them in an attack sidecar if needed.
    """
    can_id = np.asarray(table.can_id, dtype=np.uint64)
    ids = np.where(can_id > 0x7FF, format_hex(can_id, 8), format_hex(can_id, 3))
    timestamps = np.char.add(b"(", format_fixed(table.timestamp, 6))
    data = format_payload(table.payload, table.dlc)
    text = join_rows([timestamps, ids, data], [f") {interface} ".encode(), b"#"])
    with atomic_open(path, "wb") as handle:
        handle.write(text)
