"""The HCRL Car-Hacking dataset's own files: ``hcrl_ch`` (labelled CSV) and ``hcrl_ch_txt`` (normal run).

``hcrl_ch`` — ``DoS_dataset.csv``, ``Fuzzy_dataset.csv``, ``gear_dataset.csv``, ``RPM_dataset.csv``:
no header, ``Timestamp,CAN ID,DLC,DATA[0],...,DATA[DLC-1],Flag``; the row width follows the DLC::

    1478198376.389427,0316,8,05,21,68,09,21,21,00,6f,R
    1478198376.389636,01f1,2,00,00,R

ID and bytes in hex, Flag ``R`` (regular) or ``T`` (injected). ``T`` rows get label 1 and an attack
name from the file name: ``DoS_dataset`` → ``dos``, ``Fuzzy_dataset`` → ``fuzzy``,
``gear_dataset`` → ``spoof_gear``, ``RPM_dataset`` → ``spoof_rpm``, anything else → ``attack``.

``hcrl_ch_txt`` — ``normal_run_data.txt``, attack-free (every frame normal)::

    Timestamp: 1479121434.850202        ID: 0350    000    DLC: 8    05 28 84 66 6d 00 00 a2

(the field after the ID, ``000``, is kept out of the table). Both readers are vectorised.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from kdcore.data.formats.base import CaptureFormat
from kdcore.data.formats.hexparse import parse_floats
from kdcore.data.formats.textscan import Lines, RowChecks, Tokens, frame_columns, read_chunks, read_lines, sniff_rows, tokenize
from kdcore.data.frames import NORMAL, FrameTable, RowErrors

ATTACKS = {"dos": "dos", "fuzzy": "fuzzy", "gear": "spoof_gear", "rpm": "spoof_rpm"}
_CSV_ROW = re.compile(rb"^\d+(\.\d*)?,[0-9A-Fa-f]{1,8},[0-8](,[0-9A-Fa-f]{1,2}){0,8},[RT]$")
_TXT_ROW = re.compile(rb"^Timestamp:\s*\d+(\.\d*)?\s+ID:\s*[0-9A-Fa-f]{1,8}\s")


def attack_name(path: Path) -> str:
    """The attack a Car-Hacking file holds, from its name (``DoS_dataset.csv`` → ``dos``)."""
    stem = Path(path).stem.lower()
    stem = stem[: -len("_dataset")] if stem.endswith("_dataset") else stem
    return ATTACKS.get(stem, "attack")


def _timestamps(tokens: Tokens, checks: RowChecks, k: int) -> np.ndarray:
    text, fits = tokens.column(k, 32)
    timestamp, ok = parse_floats(text)
    checks.require(ok & fits, "timestamp", "not a finite number", text)
    return timestamp


class CarHackingCsv(CaptureFormat):
    name = "hcrl_ch"
    priority = 30
    carries_labels = True
    description = "HCRL Car-Hacking CSV: Timestamp,CAN ID,DLC,DATA[0..DLC-1],Flag (R normal / T injected)"
    suffixes = (".csv",)

    def sniff(self, head: bytes, path: Path) -> bool:
        return sniff_rows(head, _CSV_ROW)

    def read(self, path: Path, errors: RowErrors) -> FrameTable:
        name = attack_name(path)
        return read_chunks(read_lines(path), lambda lines: self._read_lines(lines, errors, name), errors)

    def _read_lines(self, lines: Lines, errors: RowErrors, name: str) -> FrameTable:
        tokens = tokenize(lines, b", \t")
        tokens = tokens.take(tokens.count > 0)
        if len(tokens) == 0:
            return FrameTable.empty()
        checks = RowChecks(tokens.lines)
        checks.require(tokens.count >= 4, "row", "expected Timestamp,CAN ID,DLC,DATA...,Flag")
        can_id, dlc, payload = frame_columns(tokens, checks, id_at=1, dlc_at=2, data_at=3, fields=4)
        timestamp = _timestamps(tokens, checks, 0)
        flag, _ = tokens.column(-1, 2)
        checks.require(np.isin(flag, (b"R", b"T")), "flag", "expected R or T", flag)
        valid = checks.report(errors)
        label = (flag == b"T").astype(np.uint8)
        table = FrameTable.from_frames(
            timestamp, can_id, dlc, payload, label=label, attack_type=label,
            attack_names=(NORMAL, name),
        )
        return table if valid.all() else table.take(valid)


class CarHackingText(CaptureFormat):
    name = "hcrl_ch_txt"
    priority = 40
    carries_labels = True
    description = "HCRL Car-Hacking normal-run text log: Timestamp: t  ID: id  000  DLC: n  bytes (all normal)"
    suffixes = (".txt",)

    def sniff(self, head: bytes, path: Path) -> bool:
        return sniff_rows(head, _TXT_ROW)

    def read(self, path: Path, errors: RowErrors) -> FrameTable:
        return read_chunks(read_lines(path), lambda lines: self._read_lines(lines, errors), errors)

    def _read_lines(self, lines: Lines, errors: RowErrors) -> FrameTable:
        tokens = tokenize(lines)
        tokens = tokens.take(tokens.count > 0)
        if len(tokens) == 0:
            return FrameTable.empty()
        checks = RowChecks(tokens.lines)
        layout = tokens.equals(0, b"Timestamp:") & tokens.equals(2, b"ID:") & tokens.equals(5, b"DLC:")
        checks.require(layout, "row", "expected 'Timestamp: t ID: id flags DLC: n bytes'")
        can_id, dlc, payload = frame_columns(tokens, checks, id_at=3, dlc_at=6, data_at=7, fields=7)
        timestamp = _timestamps(tokens, checks, 1)
        valid = checks.report(errors)
        table = FrameTable.from_frames(timestamp, can_id, dlc, payload)
        return table if valid.all() else table.take(valid)
