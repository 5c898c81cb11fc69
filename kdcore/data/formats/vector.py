"""Vector CANalyzer/CANoe logs, ``asc`` (text) and ``blf`` (binary), read through python-can.

``asc`` — CANalyzer/CANoe ASCII log::

    date Wed Jun 05 00:40:54.420 2024
    base hex  timestamps absolute
    Begin Triggerblock Wed Jun 05 00:40:54.420 2024
     0.001000 1  1F4             Rx   d 2 00 01

Detected by its ``date``/``base hex|dec`` header lines or by rows of that shape. Read with
``can.ASCReader`` (hex or decimal base, CAN FD rows, remote and error frames); the header's
wall-clock date (the ``Begin Triggerblock`` one when present, else ``date``) is read as UTC, so a
file gives the same absolute timestamps on every machine, and each row's offset is added to it
(a file without a date keeps the offsets: seconds since the measurement started). Lines that
python-can does not take for a frame (comments, statistics, J1939 events) are ignored.

``blf`` — Binary Logging Format, detected by its ``LOGG`` magic, read with ``can.BLFReader``
(its start time is UTC already, as python-can writes it).

Both carry no labels (use an attack sidecar, ``kdcore.data.formats.labels``). An ID's
``extended`` and ``remote`` flags are python-can's; error frames are bus events, left out and
counted in ``error_frames``; a CAN FD frame with more than 8 data bytes, or a frame with fewer
data bytes than its DLC says, is a bad row (see ``kdcore.data.formats.pythoncan``).
"""

from __future__ import annotations

import re
from pathlib import Path

from kdcore.data.formats.base import CaptureFormat
from kdcore.data.formats.text import head_lines
from kdcore.data.frames import FrameTable, RowErrors

BLF_MAGIC = b"LOGG"
_ASC_HEADER = re.compile(rb"^(date\s+\w+\s+\w+|base\s+(hex|dec)\b)", re.IGNORECASE)
_ASC_ROW = re.compile(rb"^\d+\.\d+\s+(\d+\s+[0-9A-Fa-f]+x?\s+(Rx|Tx)\s|CANFD\s)", re.IGNORECASE)


class VectorAsc(CaptureFormat):
    name = "asc"
    priority = 60
    description = "Vector ASCII log (CANalyzer/CANoe .asc), read with python-can"
    suffixes = (".asc",)

    def sniff(self, head: bytes, path: Path) -> bool:
        rows = head_lines(head, 40)
        if any(_ASC_HEADER.match(row) for row in rows[:5]):
            return True
        frames = [row for row in rows if _ASC_ROW.match(row)]
        return len(frames) >= 1 and 2 * len(frames) >= len([r for r in rows if r[:1].isdigit()])

    def read(self, path: Path, errors: RowErrors) -> FrameTable:
        from kdcore.data.formats.pythoncan import read_asc

        return read_asc(path, errors)


class VectorBlf(CaptureFormat):
    name = "blf"
    priority = 90
    description = "Vector Binary Logging Format (.blf), read with python-can"
    suffixes = (".blf",)

    def sniff(self, head: bytes, path: Path) -> bool:
        return head.startswith(BLF_MAGIC)

    def read(self, path: Path, errors: RowErrors) -> FrameTable:
        from kdcore.data.formats.pythoncan import read_blf

        return read_blf(path, errors)
