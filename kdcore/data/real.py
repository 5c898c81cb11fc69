"""Datasets from collections of real attack captures, laid out in the can-train-and-test sense.

A real attack capture holds normal traffic, then an attack somewhere in the middle, then normal
traffic again. ``attack_parts`` cuts each one in time order, at multiples of the window size, so
that training, validation and test all get normal and attack windows and no window spans two
splits:

    [0, A)  attack-free prefix      three equal stretches: the last val of each → val, the rest → train
    [A, B)  the attack span         first val of it → val; next (1 - val - TEST_SHARE) → train;
                                    the last TEST_SHARE of it and the tail [B, n) → test_<attack>

``A`` is the window boundary at or before the first attack frame, ``B`` the boundary after the
last. A capture with no attack goes to train and val (the last ``val_fraction``).

The validation normals come from across the drive (``VAL_STRETCHES``), not only from the stretch
just before the attack: the threshold and early stopping are fitted on them, and one stretch of
a drive is no sample of its normal traffic. Measured on ROAD over seven seeds (docs/transfer.md),
the ``normal`` GAT teacher's reverse light went from 0.67 ± 0.23 / 0.82 ± 0.17 (F1 off / on,
mean ± sd) to 0.97 ± 0.03 / 0.92 ± 0.06, the ``curriculum`` one's from 0.56 / 0.67 to 0.94 / 0.92.

Captures in ``test_*`` folders under the data root are held out whole: each folder is its own
test set (a capture, an attack or a vehicle never seen in training).

``road``: the ROAD masquerade captures (StatGraph's CSV layout, or any labelled layout).
``j1939``: the SystemsCyber J1939 captures: ``normal.log`` is attack-free, labelled CSVs carry
their labels, and the DoS log is labelled by ``J1939_LABELS`` (its forged frames are exactly those
of ID 00000000, an ID no ECU of that truck uses); unlabelled logs whose frames are not all known
(``tsc1.log`` duplicates ``labeled_TSC1.csv``; the fuzzing log's random IDs cannot be told from
real ones by an ID) are left out, never taken for attack-free traffic.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from kdcore.data.captures import CaptureDataset, GraphRecipe, capture_files
from kdcore.data.formats.labels import Interval
from kdcore.data.frames import FrameTable
from kdcore.errors import KdcoreError

TEST_SHARE = 0.4  # of each attack span, the last part: the test set's attacks
VAL_STRETCHES = 3  # the attack-free prefix's stretches, each ending in validation windows

# Labels the J1939 collection does not carry in its files, as an attack sidecar would give them.
J1939_LABELS = {"dos_1ms.log": (Interval(0.0, float("inf"), "dos", can_ids=(0x00000000,)),)}
J1939_LEFT_OUT = ("tsc1.log", "fuzz_1ms_ID_and_Data.log")


def attack_parts(label: np.ndarray, window: int, val: float) -> list[tuple[str, int, int]]:
    """(split, first frame, end frame) of one capture's parts; the splits are train, val and test."""
    n = len(label)
    attacks = np.flatnonzero(label)

    def cut(frame: float) -> int:  # the window boundary nearest a frame, within the capture
        return int(min(n, max(0, round(frame / window) * window)))

    if len(attacks) == 0:
        middle = cut(n * (1 - val))
        return [("train", 0, middle), ("val", middle, n)]
    a = int(attacks[0]) // window * window
    b = min(n, -(-(int(attacks[-1]) + 1) // window) * window)
    span, stretch = b - a, a / VAL_STRETCHES
    parts, start = [], 0
    for k in range(1, VAL_STRETCHES + 1):  # each stretch of the prefix trains, then its last ``val`` validates
        end, val_start = cut(k * stretch), cut(k * stretch - val * stretch)
        parts += [("train", start, val_start), ("val", val_start, end)]
        start = end
    val_end, train_end = cut(a + val * span), cut(a + (1 - TEST_SHARE) * span)
    parts += [("val", a, val_end), ("train", val_end, train_end), ("test", train_end, n)]
    return _merged([part for part in parts if part[2] > part[1]])


def _merged(parts: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Consecutive parts of one split as one part."""
    merged: list[tuple[str, int, int]] = []
    for split, first, end in parts:
        if merged and merged[-1][0] == split and merged[-1][2] == first:
            merged[-1] = (split, merged[-1][1], end)
        else:
            merged.append((split, first, end))
    return merged


class AttackCapturesDataset(CaptureDataset):
    """Captures that each hold one attack, every one cut into train, val and test in time order;
    ``test_*`` folders held out whole."""

    name: ClassVar[str] = "attack-captures"

    def captures(self, root: Path) -> list[Path]:
        """The captures to cut (held-out ``test_*`` folders aside)."""
        return [f for f in capture_files(root) if not _held_out(f, root)]

    def labels_for(self, path: Path) -> tuple[Interval, ...]:
        """Attack intervals to apply over a capture's own labels (none by default)."""
        return ()

    def recipe(self, path: Path) -> GraphRecipe:
        return GraphRecipe.from_config(self.config, labels=self.labels_for(path), formats=self.formats)

    def jobs(self, root: Path) -> list[tuple[Path, str, float, float]]:
        if not root.is_dir():
            raise KdcoreError(f"dataset {self.name!r} expects --data-root to be a folder of captures, got {root}")
        jobs = []
        for path in self.captures(root):
            table = self.recipe(path).read(path)
            n = len(table)
            for split, first, end in attack_parts(table.label, self.config.window_size, self.config.val_fraction):
                if split == "test":
                    split = f"test_{_attack_name(table)}"
                jobs.append((path, split, first / n, end / n))
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("test_")):
            jobs += [(path, folder.name, 0.0, 1.0) for path in capture_files(folder)]
        if not any(split == "train" for _, split, *_ in jobs):
            raise KdcoreError(f"{root}: no captures to train on (held-out test_* folders aside)")
        return jobs


class RoadDataset(AttackCapturesDataset):
    """ROAD masquerade attacks on a real car (ORNL), each capture cut into train/val/test; needs --data-root."""

    name: ClassVar[str] = "road"


class J1939Dataset(AttackCapturesDataset):
    """J1939 attacks on a real truck network (SystemsCyber): normal, TSC1 and DoS captures; needs --data-root."""

    name: ClassVar[str] = "j1939"

    def captures(self, root: Path) -> list[Path]:
        return [path for path in super().captures(root) if path.name not in J1939_LEFT_OUT]

    def labels_for(self, path: Path) -> tuple[Interval, ...]:
        return J1939_LABELS.get(path.name, ())


def _held_out(path: Path, root: Path) -> bool:
    return any(part.startswith("test_") for part in path.relative_to(root).parts[:-1])


def _attack_name(table: FrameTable) -> str:
    """The capture's attack: its most frequent attack type."""
    counts = np.bincount(table.attack_type[table.label == 1], minlength=len(table.attack_names))
    return table.attack_names[int(counts[1:].argmax()) + 1]
