"""``ctt``: the can-train-and-test CSV layout (hcrl_ch, hcrl_sa, set_01 … set_04).

``timestamp,arbitration_id,data_field,attack``: ID in hex, payload one hex string of DLC bytes,
attack 0/1. A dataset is a folder of ``train_01_attack_free/``, ``train_02_with_attacks/`` and
``test_0N_<name>/`` subfolders of such files (see ``kdcore.data.ctt_dataset``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from kdcore.atomic import atomic_open
from kdcore.data.formats.base import CaptureFormat, report_first_bad
from kdcore.data.formats.hexparse import as_bytes, parse_floats, parse_hex_ids, parse_hex_payload
from kdcore.data.frames import BadRowError, FrameTable, RowErrors

HEADER = "timestamp,arbitration_id,data_field,attack"


class CttCsv(CaptureFormat):
    name = "ctt"
    description = "can-train-and-test CSV: timestamp,arbitration_id,data_field,attack"
    suffixes = (".csv",)
    carries_labels = True

    def sniff(self, head: bytes, path: Path) -> bool:
        return head.lstrip(b"\xef\xbb\xbf").split(b"\n", 1)[0].strip().lower() == HEADER.encode()

    def read(self, path: Path, errors: RowErrors) -> FrameTable:
        lines = path.read_bytes().lstrip(b"\xef\xbb\xbf").splitlines()
        if not lines or lines[0].strip().lower() != HEADER.encode():
            raise BadRowError(f"{path}:1: header: expected {HEADER!r}")
        rows = [line.split(b",") for line in lines[1:]]
        line_numbers = np.arange(2, len(lines) + 1)
        keep = np.array([len(row) == 4 for row in rows], dtype=bool)
        for index in np.flatnonzero(~keep):
            if lines[index + 1].strip() == b"":
                continue  # blank lines are not rows
            errors.bad(int(line_numbers[index]), "row", f"expected 4 fields, got {len(rows[index])}")
        rows = [row for row, ok in zip(rows, keep) if ok]
        line_numbers = line_numbers[keep]
        if not rows:
            return FrameTable.empty()
        timestamp_text, id_text, data_text, attack_text = (as_bytes(column) for column in zip(*rows))

        timestamp, ok_time = parse_floats(timestamp_text)
        valid = report_first_bad(ok_time, line_numbers, "timestamp", timestamp_text, errors, "not a number")
        can_id, ok_id = parse_hex_ids(id_text)
        valid &= report_first_bad(ok_id | ~valid, line_numbers, "arbitration_id", id_text, errors, "not a hex CAN ID")
        payload, dlc, ok_data = parse_hex_payload(data_text)
        valid &= report_first_bad(ok_data | ~valid, line_numbers, "data_field", data_text, errors, "not a hex payload of 0-8 bytes")
        ok_attack = np.isin(attack_text, (b"0", b"1"))
        valid &= report_first_bad(ok_attack | ~valid, line_numbers, "attack", attack_text, errors, "expected 0 or 1")

        label = (attack_text == b"1").astype(np.uint8)
        table = FrameTable.from_frames(
            timestamp, can_id, dlc, payload, label=label, attack_type=label,
            attack_names=("normal", attack_name(path)), bad_rows=errors.skipped,
        )
        return table if valid.all() else table.take(valid)


def attack_name(path: Path) -> str:
    """The layout keeps only 0/1, so the attack is named by where the file sits:
    ``test_03_spoof/x.csv`` → ``spoof``; ``train_02_with_attacks/dos-1.csv`` → ``dos``."""
    match = re.fullmatch(r"test_\d+_(.+)", path.parent.name)
    if match:
        return match.group(1)
    return path.stem.lower().split("-")[0] or "attack"


def write_csv(table: FrameTable, path: str | Path) -> None:
    """Write frames in the ctt CSV layout, atomically."""
    payload_hex = [row[:dlc].tobytes().hex().upper() for row, dlc in zip(table.payload, table.dlc)]
    with atomic_open(path, "w") as handle:
        handle.write(HEADER + "\n")
        for timestamp, can_id, data, label in zip(table.timestamp, table.can_id, payload_hex, table.label):
            handle.write(f"{timestamp:.6f},{can_id:03X},{data},{label}\n")
