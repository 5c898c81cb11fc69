"""Window graphs stored as flat arrays (cacheable), and the PyG dataset served to loaders.

``WindowGraphs`` holds every graph of a capture in CSR style — node and edge arrays plus
``node_ptr``/``edge_ptr`` offsets per window — in raw, unscaled units; it is what the cache
stores. ``GraphSet`` is the same graphs after ID-vocabulary mapping and feature scaling, as
torch tensors, and yields one ``torch_geometric.data.Data`` per window.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs
import numpy as np
import torch
from torch.utils.data import Dataset, Subset
from torch_geometric.data import Data

from kdcore.atomic import atomic_open

_ARRAYS = ("x", "can_id", "node_ptr", "edge_index", "edge_attr", "edge_ptr", "y", "attack_type", "time_span")


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
    time_span: np.ndarray  # (windows, 2) float64, first and last frame time
    attack_names: tuple[str, ...] = attrs.field(converter=tuple)
    num_frames: int = 0  # frames of the capture(s) the windows were cut from

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_features(self) -> int:
        return self.x.shape[1]

    @classmethod
    def empty(cls, num_features: int, attack_names: Sequence[str] = ("normal",), num_frames: int = 0) -> WindowGraphs:
        zero = np.zeros(1, dtype=np.int64)
        return cls(
            np.zeros((0, num_features), np.float32), np.zeros(0, np.uint32), zero, np.zeros((2, 0), np.int32),
            np.zeros(0, np.float32), zero, np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros((0, 2)),
            attack_names, num_frames,
        )

    def node_rows(self, windows: np.ndarray) -> np.ndarray:
        """Node rows that belong to the given windows."""
        return _rows(self.node_ptr, windows)

    @classmethod
    def concat(cls, parts: Sequence[WindowGraphs]) -> WindowGraphs:
        """Graphs of several captures in order, attack types renumbered into one list of names."""
        total_frames = sum(p.num_frames for p in parts)
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
            attack_names=names,
            num_frames=total_frames,
        )

    def save(self, path: str | Path) -> None:
        """Write as an uncompressed ``.npz``, atomically (safe for concurrent builders)."""
        with atomic_open(path, "wb") as handle:
            np.savez(
                handle,
                attack_names=np.array(self.attack_names),
                num_frames=np.array(self.num_frames),
                **{k: getattr(self, k) for k in _ARRAYS},
            )

    @classmethod
    def load(cls, path: str | Path) -> WindowGraphs:
        with np.load(path, allow_pickle=False) as arrays:
            return cls(
                **{k: arrays[k] for k in _ARRAYS},
                attack_names=tuple(arrays["attack_names"].tolist()),
                num_frames=int(arrays["num_frames"]),
            )


def _rows(ptr: np.ndarray, windows: np.ndarray) -> np.ndarray:
    starts, stops = ptr[windows], ptr[np.asarray(windows) + 1]
    lengths = stops - starts
    return np.repeat(stops - lengths.cumsum(), lengths) + np.arange(lengths.sum())


class GraphSet(Dataset):
    """Prepared window graphs (IDs mapped to the vocabulary, features scaled) as PyG ``Data``."""

    def __init__(self, graphs: WindowGraphs, x: np.ndarray, id_token: np.ndarray):
        self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        self.id_token = torch.from_numpy(id_token.astype(np.int64))
        self.node_ptr = graphs.node_ptr.tolist()
        self.edge_ptr = graphs.edge_ptr.tolist()
        self.edge_index = torch.from_numpy(graphs.edge_index.astype(np.int64))
        self.edge_attr = torch.from_numpy(graphs.edge_attr).view(-1, 1)
        self.labels = torch.from_numpy(graphs.y)
        self.attack_type = torch.from_numpy(graphs.attack_type.astype(np.int64))
        self.time_span = torch.from_numpy(graphs.time_span)
        self.attack_names = graphs.attack_names

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Data:
        n0, n1 = self.node_ptr[index], self.node_ptr[index + 1]
        e0, e1 = self.edge_ptr[index], self.edge_ptr[index + 1]
        return Data(
            x=self.x[n0:n1],
            id_token=self.id_token[n0:n1],
            edge_index=self.edge_index[:, e0:e1],
            edge_attr=self.edge_attr[e0:e1],
            y=self.labels[index : index + 1],
            attack_type=self.attack_type[index : index + 1],
            num_nodes=n1 - n0,
        )


def labels_of(graphs: Dataset) -> torch.Tensor:
    """Window labels of a ``GraphSet``, a ``Subset`` of one, or any sequence of ``Data``."""
    if isinstance(graphs, Subset):
        return labels_of(graphs.dataset)[torch.as_tensor(graphs.indices, dtype=torch.long)]
    if hasattr(graphs, "labels"):
        return graphs.labels
    return torch.cat([graph.y.view(-1) for graph in graphs]) if len(graphs) else torch.empty(0, dtype=torch.long)
