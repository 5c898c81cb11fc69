"""``ctt``: the can-train-and-test CSV layout (hcrl_ch, hcrl_sa, set_01 … set_04).

``timestamp,arbitration_id,data_field,attack``: ID in hex, payload one hex string of DLC bytes,
attack 0/1. A dataset is a folder of ``train_01_attack_free/``, ``train_02_with_attacks/`` and
``test_0N_<name>/`` subfolders of such files (see ``kdcore.data.ctt_dataset``); the attack is
named after the folder (``test_03_spoof/`` → ``spoof``) or the file (``dos-1.csv`` → ``dos``).

A layout (``kdcore.data.formats.layout``), read by pyarrow's CSV reader: the header names the
columns (in any order and case; others may follow), fields may have spaces around them, the ID a
``0x`` prefix. The writer is ``kdcore.data.formats.writers.write_csv``.
"""

from __future__ import annotations

from pathlib import Path

from kdcore.data.formats.layout import CanId, Label, Layout, LayoutFormat, Payload, Timestamp
from kdcore.data.formats.text import head_lines

HEADER = "timestamp,arbitration_id,data_field,attack"
LAYOUT = Layout(
    header=True,
    timestamp=Timestamp("timestamp"),
    can_id=CanId("arbitration_id"),
    payload=Payload(column="data_field"),
    label=Label("attack", normal=("0",), attack=("1",), attack_names="file"),
)


class CttCsv(LayoutFormat):
    name = "ctt"
    priority = 50
    description = "can-train-and-test CSV: timestamp,arbitration_id,data_field,attack"
    suffixes = (".csv",)

    def __init__(self):
        super().__init__(LAYOUT)

    def sniff(self, head: bytes, path: Path) -> bool:
        lines = head_lines(head, 1)
        return bool(lines) and lines[0].lower() == HEADER.encode()
