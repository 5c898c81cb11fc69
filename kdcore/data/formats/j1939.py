"""``j1939_csv``: labelled SAE J1939 captures in CSV (SystemsCyber's J1939 attack datasets).

A header names the columns; kdcore reads five of them (the others, J1939 decoding and the rule
that flagged a frame, are passed over; quoted values may hold commas)::

    timestamp,iface,can_id,dlc,data,...,label,...
    14.975137,can0,201326603,8,C97070DDFFF0FFFF,...,high_torque_command,...

CAN ID in decimal, every ID a 29-bit J1939 identifier (priority, PGN, source address) kept whole;
the payload one hex string of DLC bytes; ``label`` is ``normal`` or the attack's name, which
becomes the attack type. A layout (``kdcore.data.formats.layout``) read by pyarrow's CSV reader.
"""

from __future__ import annotations

from pathlib import Path

from kdcore.data.formats.layout import CanId, Dlc, Label, Layout, LayoutFormat, Payload, Timestamp
from kdcore.data.formats.text import head_lines

LAYOUT = Layout(
    header=True,
    timestamp=Timestamp("timestamp"),
    can_id=CanId("can_id", base=10, extended=True),
    dlc=Dlc("dlc"),
    payload=Payload(column="data"),
    label=Label("label", normal=("normal",), attack_names="value"),
)
COLUMNS = {b"timestamp", b"can_id", b"dlc", b"data", b"label"}


class J1939Csv(LayoutFormat):
    name = "j1939_csv"
    priority = 50
    description = "labelled J1939 CSV: timestamp,iface,can_id (decimal),dlc,data,...,label (normal or the attack)"
    suffixes = (".csv",)

    def __init__(self):
        super().__init__(LAYOUT)

    def sniff(self, head: bytes, path: Path) -> bool:
        lines = head_lines(head, 1)
        return bool(lines) and COLUMNS <= {name.strip().lower() for name in lines[0].split(b",")}
