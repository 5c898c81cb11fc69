"""Attack sidecars: labels for captures whose format has none (candump, trc, asc, blf, busmaster).

A sidecar is a small CSV next to the capture, named after the capture's full file name plus
``.attacks.csv`` (``drive.log`` → ``drive.log.attacks.csv``)::

    start,end,attack,can_id
    1717548054.90,1717548055.40,dos,000
    1717548056.00,1717548058.00,spoof,0C5 1A0
    1717548060.00,1717548062.50,fuzzy,

``start``/``end`` are seconds on the capture's own time scale — the timestamps ``read_capture``
returns for it (absolute Unix seconds for candump, trc with ``$STARTTIME``, asc/blf with a start
date, BUSMASTER with a start date; offsets otherwise). For a capture without timestamps
(``timestamps=False``: ``timestamp`` holds each frame's position 0, 1, 2, ...) they are frame
positions. A frame with ``start <= timestamp <= end`` becomes label 1 with that attack name; the
optional ``can_id`` column (hex IDs, ``0x`` allowed, separated by spaces; empty means every ID)
restricts the interval to those IDs: "frames of ID X between t0 and t1 are forged" labels exactly
those frames. Later rows win where intervals overlap. Attack names may not be ``normal``; blank
lines and lines starting with ``#`` are ignored.

``read_capture`` applies the sidecar automatically when it exists. A sidecar next to a capture
whose format carries its own labels (ctt, hcrl_ch, j1939_csv, road, a layout with a label
column, ...) is refused rather than merged, as is any malformed sidecar row (``path:line: field:
reason``, whatever ``on_bad_rows`` says: a label row silently skipped would silently change the
labels). An interval that covers no
frame is reported with a warning: it usually means the sidecar uses another time scale.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import attrs
import numpy as np

from kdcore.data.formats.base import CaptureFormat
from kdcore.data.frames import NORMAL, FrameTable, RowErrors
from kdcore.errors import KdcoreError

SUFFIX = ".attacks.csv"
COLUMNS = ("start", "end", "attack")
OPTIONAL = ("can_id",)


def _ids(ids) -> tuple[int, ...] | None:
    """The IDs an interval is restricted to: one ID, several, or None (every ID)."""
    return None if ids is None else (ids,) if isinstance(ids, int) else tuple(ids)


@attrs.frozen
class Interval:
    start: float
    end: float
    attack: str
    can_ids: tuple[int, ...] | None = attrs.field(default=None, converter=_ids)  # None: every ID
    line: int = 0


def sidecar_path(capture: str | Path) -> Path:
    capture = Path(capture)
    return capture.with_name(capture.name + SUFFIX)


def read_sidecar(path: str | Path) -> list[Interval]:
    """The intervals of a sidecar file; any malformed row raises ``BadRowError``."""
    path = Path(path)
    errors = RowErrors(path, "error")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        errors.bad(data[: exc.start].count(b"\n") + 1, "row", f"not UTF-8 text: {data[exc.start : exc.start + 8]!r}")
    reader = csv.reader(text.splitlines())
    rows = []
    try:
        for row in reader:  # line_num: a quoted field may span lines
            if row and any(cell.strip() for cell in row) and not row[0].lstrip().startswith("#"):
                rows.append((reader.line_num, row))
    except csv.Error as exc:  # e.g. a field past csv's size limit
        errors.bad(reader.line_num, "row", f"not a CSV row: {exc}")
    if not rows:
        errors.bad(1, "header", f"expected a header {','.join(COLUMNS)}[,can_id]")
    header_line, header = rows[0]
    names = [cell.strip().lower() for cell in header]
    missing = [name for name in COLUMNS if name not in names]
    unknown = [name for name in names if name not in COLUMNS + OPTIONAL]
    if missing or unknown or len(set(names)) != len(names):
        errors.bad(header_line, "header", f"expected columns {','.join(COLUMNS)}[,can_id], got {','.join(names)!r}")
    column = {name: names.index(name) for name in names}
    intervals = []
    for number, row in rows[1:]:
        if len(row) != len(names):
            errors.bad(number, "row", f"expected {len(names)} fields, got {len(row)}")
        cells = {name: row[index].strip() for name, index in column.items()}
        bounds = []
        for name in ("start", "end"):
            try:
                value = float(cells[name])
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                errors.bad(number, name, f"not a finite number: {cells[name]!r}")
            bounds.append(value)
        if bounds[0] > bounds[1]:
            errors.bad(number, "end", f"before start: {cells['end']!r} < {cells['start']!r}")
        attack = cells["attack"]
        if not attack or attack.lower() == NORMAL:
            errors.bad(number, "attack", f"expected an attack name (not empty, not 'normal'): {attack!r}")
        can_ids = None
        if cells.get("can_id"):
            can_ids = tuple(_hex_id(text) for text in cells["can_id"].split())
            if -1 in can_ids:
                errors.bad(number, "can_id", f"expected hex CAN IDs separated by spaces: {cells['can_id']!r}")
        intervals.append(Interval(bounds[0], bounds[1], attack, can_ids, number))
    return intervals


def _hex_id(text: str) -> int:
    """A hex CAN ID (``0x`` allowed), -1 when it is none."""
    try:
        can_id = int(text, 16)
    except ValueError:
        return -1
    return can_id if 0 <= can_id <= 0x1FFFFFFF and "_" not in text else -1


def apply_intervals(table: FrameTable, intervals: list[Interval], source: str | Path = "sidecar") -> FrameTable:
    """The table with frames inside the intervals labelled as attacks (later intervals win)."""
    if not intervals:
        return table
    names = list(table.attack_names)
    label = table.label.copy()
    attack_type = table.attack_type.copy()
    timestamp = table.timestamp
    ordered = len(timestamp) < 2 or bool((np.diff(timestamp) >= 0).all())
    for interval in intervals:
        if ordered:  # binary search: touch only the interval's slice of the table
            lo = int(np.searchsorted(timestamp, interval.start, side="left"))
            hi = int(np.searchsorted(timestamp, interval.end, side="right"))
            selected = np.arange(lo, hi)
        else:
            selected = np.flatnonzero((timestamp >= interval.start) & (timestamp <= interval.end))
        if interval.can_ids is not None:
            selected = selected[np.isin(table.can_id[selected], interval.can_ids)]
        if len(selected) == 0:
            ids = "" if interval.can_ids is None else f" for ID {' '.join(f'{i:X}' for i in interval.can_ids)}"
            scale = "the capture spans" if table.timestamps else "the capture has no timestamps: intervals are frame positions, here"
            warnings.warn(
                f"{source}:{interval.line}: the interval {interval.start}..{interval.end}{ids} covers no frame "
                f"({scale} {timestamp.min(initial=math.inf)}..{timestamp.max(initial=-math.inf)})",
                stacklevel=2,
            )
            continue
        if interval.attack not in names:
            if len(names) == 256:
                raise KdcoreError(f"{source}:{interval.line}: more than 255 attack names")
            names.append(interval.attack)
        label[selected] = 1
        attack_type[selected] = names.index(interval.attack)
    return attrs.evolve(table, label=label, attack_type=attack_type, attack_names=tuple(names))


def apply_sidecar(table: FrameTable, capture: str | Path, capture_format: CaptureFormat) -> FrameTable:
    """Apply ``<capture>.attacks.csv`` when it exists (refused for formats that carry labels)."""
    path = sidecar_path(capture)
    if not path.is_file():
        return table
    if capture_format.carries_labels:
        raise KdcoreError(
            f"{path}: an attack sidecar next to a {capture_format.name} capture, which carries its own labels: "
            "remove the sidecar (labels are not merged)"
        )
    return apply_intervals(table, read_sidecar(path), path)
