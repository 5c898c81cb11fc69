"""``road``: ROAD masquerade captures as StatGraph publishes them (``Dataset/ROAD/Deal_*.csv``).

No header, no timestamp, no DLC: one frame a line, in bus order::

    852,32,10,0,0,0,2,116,128,0.0

the ID and eight bytes in decimal, the label ``0.0`` (normal) or ``1.0`` (attack). Frames keep
their positions in the capture (``timestamps=False``); every frame has 8 bytes. The attack is named
after the file: its name without StatGraph's ``Deal_`` prefix and from ``_attack`` on (the run's
number and the attack family: every ROAD capture here is a masquerade), lowercased —
``Deal_reverse_light_on_attack_1_masquerade.csv`` → ``reverse_light_on``, so the runs of one attack
(``..._attack_1``, ``..._attack_2``) share its name.
A layout (``kdcore.data.formats.layout``) read by pyarrow's CSV reader.
"""

from __future__ import annotations

import re
from pathlib import Path

from kdcore.data.formats.layout import CanId, Label, Layout, LayoutFormat, Payload
from kdcore.data.formats.text import sniff_rows

LAYOUT = Layout(
    can_id=CanId(0, base=10),
    payload=Payload(columns=tuple(range(1, 9)), base=10),
    label=Label(9, normal=("0", "0.0"), attack=("1", "1.0"), attack_names="file"),
)
_ROW = re.compile(rb"^\d{1,9}(,\d{1,3}){8},[01](\.0)?$")


class RoadCsv(LayoutFormat):
    name = "road"
    priority = 30
    description = "ROAD masquerade CSV (StatGraph): ID,b0..b7 in decimal,label 0.0/1.0; no timestamp"
    suffixes = (".csv",)

    def __init__(self):
        super().__init__(LAYOUT)

    def sniff(self, head: bytes, path: Path) -> bool:
        return sniff_rows(head, _ROW)

    def attack_name(self, path: Path) -> str:
        return path.stem.removeprefix("Deal_").split("_attack")[0].lower() or "attack"
