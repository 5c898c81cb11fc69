"""The HCRL Car-Hacking dataset's own files: ``hcrl_ch`` (labelled CSV) and ``hcrl_ch_txt`` (normal run).

``hcrl_ch`` — ``DoS_dataset.csv``, ``Fuzzy_dataset.csv``, ``gear_dataset.csv``, ``RPM_dataset.csv``:
no header, ``Timestamp,CAN ID,DLC,DATA[0],...,DATA[DLC-1],Flag``; the row width follows the DLC::

    1478198376.389427,0316,8,05,21,68,09,21,21,00,6f,R
    1478198376.389636,01f1,2,00,00,R

ID and bytes in hex, Flag ``R`` (regular) or ``T`` (injected). ``T`` rows get label 1 and an attack
name from the file name: ``DoS_dataset`` → ``dos``, ``Fuzzy_dataset`` → ``fuzzy``,
``gear_dataset`` → ``spoof_gear``, ``RPM_dataset`` → ``spoof_rpm``, anything else → ``attack``.
A layout with ``payload.rest`` (rows split by ``pyarrow.compute``).

``hcrl_ch_txt`` — ``normal_run_data.txt``, attack-free (every frame normal)::

    Timestamp: 1479121434.850202        ID: 0350    000    DLC: 8    05 28 84 66 6d 00 00 a2

(the field after the ID, ``000``, is kept out of the table).
"""

from __future__ import annotations

import re
from pathlib import Path

from kdcore.data.formats.base import TextFormat
from kdcore.data.formats.layout import CanId, Dlc, Label, Layout, LayoutFormat, Payload, Timestamp
from kdcore.data.formats.text import Lines, Problems, frame_fields, sniff_rows, split_rows
from kdcore.data.frames import FrameTable, RowErrors

ATTACKS = {"dos": "dos", "fuzzy": "fuzzy", "gear": "spoof_gear", "rpm": "spoof_rpm"}
LAYOUT = Layout(
    timestamp=Timestamp(0),
    can_id=CanId(1),
    dlc=Dlc(2),
    payload=Payload(rest=3),
    label=Label(-1, normal=("R",), attack=("T",), attack_names="file"),
)
_CSV_ROW = re.compile(rb"^\d+(\.\d*)?,[0-9A-Fa-f]{1,8},[0-8](,[0-9A-Fa-f]{1,2}){0,8},[RT]$")
_TXT_ROW = re.compile(rb"^Timestamp:\s*\d+(\.\d*)?\s+ID:\s*[0-9A-Fa-f]{1,8}\s")


class CarHackingCsv(LayoutFormat):
    name = "hcrl_ch"
    priority = 30
    description = "HCRL Car-Hacking CSV: Timestamp,CAN ID,DLC,DATA[0..DLC-1],Flag (R normal / T injected)"
    suffixes = (".csv",)

    def __init__(self):
        super().__init__(LAYOUT)

    def sniff(self, head: bytes, path: Path) -> bool:
        return sniff_rows(head, _CSV_ROW)

    def attack_name(self, path: Path) -> str:
        """``DoS_dataset.csv`` → ``dos``, ..., anything else → ``attack``."""
        stem = path.stem.lower()
        return ATTACKS.get(stem.removesuffix("_dataset"), "attack")


class CarHackingText(TextFormat):
    name = "hcrl_ch_txt"
    priority = 40
    description = "HCRL Car-Hacking normal-run text log: Timestamp: t  ID: id  000  DLC: n  bytes (all normal)"
    suffixes = (".txt",)

    def sniff(self, head: bytes, path: Path) -> bool:
        return sniff_rows(head, _TXT_ROW)

    def parse(self, lines: Lines, settings, errors: RowErrors) -> FrameTable:
        rows = split_rows(lines)
        problems = Problems(rows)
        shape = rows.field(0).equals(b"Timestamp:") & rows.field(2).equals(b"ID:") & rows.field(5).equals(b"DLC:")
        problems.require(shape, "row", "expected 'Timestamp: t ID: id flags DLC: n bytes'")
        field = rows.field(1)
        timestamp, ok = field.floats()
        problems.require(ok, "timestamp", "not a finite number", field)
        can_id, dlc, payload = frame_fields(rows, problems, id_at=3, dlc_at=6, data_at=7, fields=7)
        valid = problems.report(errors)
        table = FrameTable.from_frames(timestamp, can_id, dlc, payload)
        return table if valid.all() else table.take(valid)
