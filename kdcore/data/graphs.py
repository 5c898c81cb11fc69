"""Window graphs stored as flat arrays: what the cache holds, in numpy alone.

``WindowGraphs`` holds every graph of a capture in CSR style — node and edge arrays plus
``node_ptr``/``edge_ptr`` offsets per window — in raw, unscaled units. For captures too big for
memory, ``GraphWriter`` appends graphs part by part to a folder of ``.npy`` files that
``WindowGraphs.load_folder`` opens memory-mapped. The torch datasets served to loaders are in
``kdcore.data.graphset``: building graphs needs no torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import attrs
import numpy as np

from kdcore.atomic import atomic_open

_ARRAYS = ("x", "can_id", "node_ptr", "edge_index", "edge_attr", "edge_ptr", "y", "attack_type", "time_span", "node_attack", "attack_start")


@attrs.frozen(eq=False)
class WindowGraphs:
    """All window graphs of one capture (or several, concatenated), raw."""

    x: np.ndarray  # (nodes, features) float32, unscaled
    can_id: np.ndarray  # (nodes,) uint32, the raw CAN ID of each node
    node_ptr: np.ndarray  # (windows + 1,) offsets into the node arrays
    edge_index: np.ndarray  # (2, edges) int32, local to each window
    edge_attr: np.ndarray  # (edges,) float32, transition share of the window
    edge_ptr: np.ndarray  # (windows + 1,) offsets into the edge arrays
    y: np.ndarray  # (windows,) int64, 0 normal / 1 attack
    attack_type: np.ndarray  # (windows,) uint8 into attack_names
    time_span: np.ndarray  # (windows, 2) float64, first and last frame time (positions without timestamps)
    node_attack: np.ndarray  # (nodes,) bool, whether any of the node's frames in its window is an attack frame
    attack_start: np.ndarray  # (windows,) float64, time (position) of the window's first attack frame; NaN: none
    attack_names: tuple[str, ...] = attrs.field(converter=tuple)
    num_frames: int = 0  # frames of the capture(s) the windows were cut from
    timestamps: bool = True  # False: ``time_span`` holds frame positions, and timing features are absent (NaN)
    folder: Path | None = attrs.field(default=None, kw_only=True)  # set when the arrays are mapped from it

    def __len__(self) -> int:
        return len(self.y)

    def __reduce_ex__(self, protocol):
        if self.folder is not None:  # mapped: pickle the folder, not the data (e.g. for DataLoader workers)
            return (WindowGraphs.load_folder, (self.folder,))
        return super().__reduce_ex__(protocol)

    @property
    def mapped(self) -> bool:
        """Whether the arrays are memory-mapped from disk rather than held in memory."""
        return isinstance(self.x, np.memmap)

    @property
    def num_features(self) -> int:
        return self.x.shape[1]

    @classmethod
    def empty(cls, num_features: int, attack_names: Sequence[str] = ("normal",), num_frames: int = 0, timestamps: bool = True) -> WindowGraphs:
        zero = np.zeros(1, dtype=np.int64)
        return cls(
            np.zeros((0, num_features), np.float32), np.zeros(0, np.uint32), zero, np.zeros((2, 0), np.int32),
            np.zeros(0, np.float32), zero, np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros((0, 2)), np.zeros(0, bool),
            np.zeros(0), attack_names, num_frames, timestamps,
        )

    def node_rows(self, windows: np.ndarray) -> np.ndarray:
        """Node rows that belong to the given windows."""
        return _rows(self.node_ptr, windows)

    @classmethod
    def concat(cls, parts: Sequence[WindowGraphs]) -> WindowGraphs:
        """Graphs of several captures in order, attack types renumbered into one list of names;
        with timestamps only if every part has them."""
        total_frames = sum(p.num_frames for p in parts)
        timestamps = all(p.timestamps for p in parts)
        parts = [part for part in parts if len(part)] or list(parts[:1])
        names: list[str] = ["normal"]
        for part in parts:
            names += [name for name in part.attack_names if name not in names]
        node_offsets = np.cumsum([0] + [part.node_ptr[-1] for part in parts])
        edge_offsets = np.cumsum([0] + [part.edge_ptr[-1] for part in parts])
        return cls(
            x=np.concatenate([p.x for p in parts]),
            can_id=np.concatenate([p.can_id for p in parts]),
            node_ptr=np.concatenate([[0]] + [p.node_ptr[1:] + o for p, o in zip(parts, node_offsets)]),
            edge_index=np.concatenate([p.edge_index for p in parts], axis=1),
            edge_attr=np.concatenate([p.edge_attr for p in parts]),
            edge_ptr=np.concatenate([[0]] + [p.edge_ptr[1:] + o for p, o in zip(parts, edge_offsets)]),
            y=np.concatenate([p.y for p in parts]),
            attack_type=np.concatenate(
                [np.array([names.index(n) for n in p.attack_names], np.uint8)[p.attack_type] for p in parts]
            ),
            time_span=np.concatenate([p.time_span for p in parts]),
            node_attack=np.concatenate([p.node_attack for p in parts]),
            attack_start=np.concatenate([p.attack_start for p in parts]),
            attack_names=names,
            num_frames=total_frames,
            timestamps=timestamps,
        )

    def save(self, path: str | Path) -> None:
        """Write as an uncompressed ``.npz``, atomically (safe for concurrent builders)."""
        with atomic_open(path, "wb") as handle:
            np.savez(
                handle,
                attack_names=np.array(self.attack_names),
                num_frames=np.array(self.num_frames),
                timestamps=np.array(self.timestamps),
                **{k: getattr(self, k) for k in _ARRAYS},
            )

    @classmethod
    def load(cls, path: str | Path) -> WindowGraphs:
        with np.load(path, allow_pickle=False) as arrays:
            return cls(
                **{k: arrays[k] for k in _ARRAYS},
                attack_names=tuple(arrays["attack_names"].tolist()),
                num_frames=int(arrays["num_frames"]),
                timestamps=bool(arrays["timestamps"]),
            )

    @classmethod
    def load_folder(cls, folder: str | Path, mapped: bool = True) -> WindowGraphs:
        """Graphs a ``GraphWriter`` wrote; ``mapped``: arrays memory-mapped read-only, else read into memory."""
        folder = Path(folder)
        meta = json.loads((folder / _META).read_text())
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r" if mapped else None) for name in _ARRAYS}
        if not mapped:
            arrays["edge_index"] = np.ascontiguousarray(arrays["edge_index"])
        return cls(**arrays, attack_names=tuple(meta["attack_names"]), num_frames=meta["num_frames"], timestamps=meta["timestamps"],
                   folder=folder if mapped else None)


_META = "meta.json"
_NPY_HEADER_BYTES = 128  # magic, version, length and the header text padded to 128 bytes (data stays aligned)
# how each array grows: its dtype, the shape of one appended row, and whether rows are its last axis
# (edge_index is (2, edges): stored Fortran-ordered, so appending edges appends bytes)
_ROWS = {
    "x": (np.float32, None, False),
    "can_id": (np.uint32, (), False),
    "node_ptr": (np.int64, (), False),
    "edge_index": (np.int32, (2,), True),
    "edge_attr": (np.float32, (), False),
    "edge_ptr": (np.int64, (), False),
    "y": (np.int64, (), False),
    "attack_type": (np.uint8, (), False),
    "time_span": (np.float64, (2,), False),
    "node_attack": (np.bool_, (), False),
    "attack_start": (np.float64, (), False),
}


def _npy_header(dtype, shape: tuple[int, ...], fortran_order: bool) -> bytes:
    """A version 1.0 ``.npy`` header of fixed length, so it can be rewritten once the shape is known."""
    fields = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": fortran_order, "shape": shape}
    text = repr(fields).ljust(_NPY_HEADER_BYTES - 11) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode("latin1")


class GraphWriter:
    """Appends ``WindowGraphs`` part by part to ``.npy`` files in a folder, then ``close`` writes
    their final shapes and ``meta.json``. Only one part is in memory at a time; the folder loads
    with ``WindowGraphs.load_folder`` as the concatenation of the parts."""

    def __init__(self, folder: str | Path, num_features: int):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.row_shapes = {name: (num_features,) if row is None else row for name, (_, row, _) in _ROWS.items()}
        self.rows = dict.fromkeys(_ROWS, 0)
        self.files = {}
        for name, (dtype, _, fortran) in _ROWS.items():
            handle = open(self.folder / f"{name}.npy", "wb")
            handle.write(_npy_header(dtype, self._shape(name), fortran))
            self.files[name] = handle
        self.attack_names = ["normal"]
        self.num_frames = 0
        self.timestamps = True
        self._write("node_ptr", np.zeros(1, np.int64))
        self._write("edge_ptr", np.zeros(1, np.int64))

    def append(self, part: WindowGraphs) -> None:
        self.attack_names += [name for name in part.attack_names if name not in self.attack_names]
        renumber = np.array([self.attack_names.index(name) for name in part.attack_names], np.uint8)
        nodes, edges = self.rows["x"], self.rows["edge_attr"]
        self._write("x", part.x)
        self._write("can_id", part.can_id)
        self._write("node_ptr", part.node_ptr[1:] + nodes)
        self._write("edge_index", part.edge_index.T)
        self._write("edge_attr", part.edge_attr)
        self._write("edge_ptr", part.edge_ptr[1:] + edges)
        self._write("y", part.y)
        self._write("attack_type", renumber[part.attack_type])
        self._write("time_span", part.time_span)
        self._write("node_attack", part.node_attack)
        self._write("attack_start", part.attack_start)
        self.num_frames += part.num_frames
        self.timestamps &= part.timestamps

    def close(self) -> None:
        """Final shapes into the headers, everything flushed to disk, ``meta.json`` last."""
        for name, handle in self.files.items():
            dtype, _, fortran = _ROWS[name]
            handle.seek(0)
            handle.write(_npy_header(dtype, self._shape(name), fortran))
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        meta = json.dumps({"attack_names": self.attack_names, "num_frames": self.num_frames, "timestamps": self.timestamps})
        with open(self.folder / _META, "w") as handle:
            handle.write(meta)
            handle.flush()
            os.fsync(handle.fileno())

    def abort(self) -> None:
        for handle in self.files.values():
            handle.close()

    def _shape(self, name: str) -> tuple[int, ...]:
        shape = (self.rows[name], *self.row_shapes[name])
        return shape[::-1] if _ROWS[name][2] else shape

    def _write(self, name: str, rows: np.ndarray) -> None:
        dtype, _, _ = _ROWS[name]
        rows = np.ascontiguousarray(rows, dtype=dtype)
        if rows.shape[1:] != self.row_shapes[name]:
            raise ValueError(f"{name}: rows of shape {rows.shape[1:]}, expected {self.row_shapes[name]}")
        self.files[name].write(rows.tobytes())
        self.rows[name] += len(rows)


def _rows(ptr: np.ndarray, windows: np.ndarray) -> np.ndarray:
    starts, stops = ptr[windows], ptr[np.asarray(windows) + 1]
    lengths = stops - starts
    return np.repeat(stops - lengths.cumsum(), lengths) + np.arange(lengths.sum())
