"""The frame table: every reader's output, one numpy column per field.

Columns (n = number of frames):
- ``timestamp``: float64 seconds, as recorded (absolute or relative to the capture start)
- ``can_id``: uint32, standard (11-bit) and extended (29-bit) identifiers alike
- ``dlc``: uint8, 0..8 bytes of payload
- ``payload``: uint8 (n, 8), zero-padded past ``dlc``
- ``label``: uint8, 0 normal / 1 attack
- ``attack_type``: uint8 index into ``attack_names``; 0 is always ``"normal"``
- ``extended``: bool, a 29-bit identifier (as the capture says; else inferred: ID > 0x7FF)
- ``remote``: bool, a remote (RTR) frame: an ID and a DLC, no data

A capture without timestamps (``timestamps=False``) holds each frame's position in the capture
(0, 1, 2, ...) in ``timestamp``: the order is real, the clock is not, and nothing downstream takes
it for seconds (see ``kdcore.data.windows``). Bus error frames are not frames of any ECU: readers
leave them out and count them in ``error_frames``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs
import numpy as np

from kdcore.errors import KdcoreError

NORMAL = "normal"


class BadRowError(KdcoreError):
    """A malformed row in a capture: names the file, the line and the field."""


@attrs.define
class RowErrors:
    """What a reader does with a malformed row: raise (``error``) or count and skip (``skip``)."""

    path: Path
    on_bad_rows: str = "error"
    skipped: int = 0
    first: str | None = None  # the first skipped row's message, for reports

    def __attrs_post_init__(self):
        if self.on_bad_rows not in ("error", "skip"):
            raise KdcoreError(f"on_bad_rows must be 'error' or 'skip', got {self.on_bad_rows!r}")

    def bad(self, line: int, field: str, reason: str) -> None:
        message = f"{self.path}:{line}: {field}: {reason}"
        if self.on_bad_rows == "error":
            raise BadRowError(message)
        self.skipped += 1
        if self.first is None:
            self.first = message

    def to_report(self, rows: np.ndarray) -> np.ndarray:
        """The bad ``rows`` (in line order) that need a message: the first one. In ``error`` mode it
        raises; in ``skip`` mode the others are only counted, here — formatting a message per row
        would make a file of millions of bad rows take minutes."""
        if len(rows) > 1 and self.on_bad_rows == "skip":
            self.skipped += len(rows) - 1
            return rows[:1]
        return rows


def _column(dtype, ndim=1):
    def convert(value):
        array = np.ascontiguousarray(value, dtype=dtype)
        if array.ndim != ndim:
            raise ValueError(f"expected a {ndim}-d array, got shape {array.shape}")
        return array

    return attrs.field(converter=convert)


@attrs.frozen(eq=False)
class FrameTable:
    """Frames of one capture (or several, concatenated), columnar."""

    timestamp: np.ndarray = _column(np.float64)
    can_id: np.ndarray = _column(np.uint32)
    dlc: np.ndarray = _column(np.uint8)
    payload: np.ndarray = _column(np.uint8, ndim=2)
    label: np.ndarray = _column(np.uint8)
    attack_type: np.ndarray = _column(np.uint8)
    extended: np.ndarray = _column(bool)
    remote: np.ndarray = _column(bool)
    attack_names: tuple[str, ...] = attrs.field(default=(NORMAL,), converter=tuple)
    bad_rows: int = 0
    timestamps: bool = True  # False: ``timestamp`` is the frame's position, the capture has no clock
    error_frames: int = 0

    def __attrs_post_init__(self):
        n = len(self.timestamp)
        for name in ("can_id", "dlc", "payload", "label", "attack_type", "extended", "remote"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"column {name} has {len(getattr(self, name))} rows, timestamp has {n}")
        if self.payload.shape[1:] != (8,):
            raise ValueError(f"payload must be (n, 8), got {self.payload.shape}")
        if not self.attack_names or self.attack_names[0] != NORMAL:
            raise ValueError("attack_names must start with 'normal'")

    def __len__(self) -> int:
        return len(self.timestamp)

    @classmethod
    def from_frames(
        cls,
        timestamp,
        can_id,
        dlc,
        payload,
        label=None,
        attack_type=None,
        attack_names: Sequence[str] = (NORMAL,),
        bad_rows: int = 0,
        *,
        extended=None,
        remote=None,
        timestamps: bool = True,
        error_frames: int = 0,
    ) -> FrameTable:
        """Build a table; labels default to all normal, attack types to the label (1 → first attack),
        ``extended`` to IDs above 0x7FF, ``remote`` to none. Without timestamps, pass ``timestamp=None``:
        the frames' positions are stored instead."""
        n = len(can_id)
        if timestamp is None:
            timestamp, timestamps = np.arange(n, dtype=np.float64), False
        label = np.zeros(n, np.uint8) if label is None else np.asarray(label, np.uint8)
        if attack_type is None:
            attack_type = label.copy()
            if label.any() and len(attack_names) == 1:
                attack_names = (NORMAL, "attack")
        extended = np.asarray(can_id, np.uint32) > 0x7FF if extended is None else extended
        remote = np.zeros(n, bool) if remote is None else remote
        return cls(
            timestamp, can_id, dlc, payload, label, attack_type, extended, remote, tuple(attack_names), bad_rows,
            timestamps, error_frames,
        )

    @classmethod
    def empty(cls, timestamps: bool = True) -> FrameTable:
        return cls.from_frames(np.empty(0), np.empty(0), np.empty(0), np.empty((0, 8)), timestamps=timestamps)

    def take(self, index) -> FrameTable:
        """Rows selected by a slice, boolean mask or index array."""
        return attrs.evolve(
            self,
            timestamp=self.timestamp[index],
            can_id=self.can_id[index],
            dlc=self.dlc[index],
            payload=self.payload[index],
            label=self.label[index],
            attack_type=self.attack_type[index],
            extended=self.extended[index],
            remote=self.remote[index],
        )

    @property
    def attack_rows(self) -> int:
        return int(self.label.sum())

    def with_positions(self) -> FrameTable:
        """The table read as one without a clock: positions 0, 1, 2, ... in ``timestamp``."""
        return attrs.evolve(self, timestamp=np.arange(len(self), dtype=np.float64), timestamps=False)

    @classmethod
    def concat(cls, tables: Sequence[FrameTable]) -> FrameTable:
        """Tables one after the other, with attack types renumbered into one list of names. The
        result has timestamps only if every table has them."""
        names: list[str] = [NORMAL]
        for table in tables:
            names += [name for name in table.attack_names if name not in names]
        attack_types = []
        for table in tables:
            mapping = np.array([names.index(name) for name in table.attack_names], dtype=np.uint8)
            attack_types.append(mapping[table.attack_type])
        if not tables:
            return cls.empty()
        return cls(
            np.concatenate([t.timestamp for t in tables]),
            np.concatenate([t.can_id for t in tables]),
            np.concatenate([t.dlc for t in tables]),
            np.concatenate([t.payload for t in tables]),
            np.concatenate([t.label for t in tables]),
            np.concatenate(attack_types),
            np.concatenate([t.extended for t in tables]),
            np.concatenate([t.remote for t in tables]),
            tuple(names),
            sum(t.bad_rows for t in tables),
            all(t.timestamps for t in tables),
            sum(t.error_frames for t in tables),
        )


@attrs.define
class SharedStamps:
    """Of a stream of frames, how many carry the timestamp of the frame before them (``shared``)
    of how many follow one (``pairs``), counted chunk by chunk in flat memory. A logger that stamps
    each frame as it leaves the bus shares none; one that stamps frames in batches, or to a coarse
    clock, shares many (measured on the shared captures: 0.000 against 0.18–0.29), and its batching
    shows in every ID's timing (docs/transfer.md, "A logger's timing")."""

    shared: int = 0
    pairs: int = 0
    last: float | None = None  # the last frame's timestamp: the next chunk's first frame follows it

    def add(self, table: FrameTable, follows: bool = True) -> SharedStamps:
        """Count ``table``'s frames; ``follows``: its first frame follows the last one counted
        (False for another capture). A table without timestamps has none to share."""
        if not table.timestamps or not len(table):
            return self
        stamps = table.timestamp if self.last is None or not follows else np.concatenate([[self.last], table.timestamp])
        self.shared += int(np.count_nonzero(np.diff(stamps) == 0))
        self.pairs += len(stamps) - 1
        self.last = float(table.timestamp[-1])
        return self

    @property
    def share(self) -> float | None:
        """The share of frames stamped as the one before; None before any pair was counted."""
        return self.shared / self.pairs if self.pairs else None

    @property
    def rounded(self) -> float | None:
        """``share`` to four decimals, as calibration records, ``inspect`` and ``evaluate`` give it."""
        return None if self.share is None else round(self.share, 4)
