"""The PyG datasets served to loaders: window graphs after ID mapping and feature scaling.

``GraphSet`` holds prepared graphs as torch tensors and yields one ``torch_geometric.data.Data``
per window; ``MappedGraphSet`` serves graphs from parts that may be memory-mapped, preparing each
graph only when it is read.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset
from torch_geometric.data import Data

from kdcore.data.graphs import WindowGraphs
from kdcore.data.preprocess import UNPROFILED


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
        self.attack_start = np.asarray(graphs.attack_start)
        self.attack_names = graphs.attack_names
        self.timestamps = graphs.timestamps
        self.can_id = np.asarray(graphs.can_id)
        self.node_attack = np.asarray(graphs.node_attack)

    def __len__(self) -> int:
        return len(self.labels)

    def window_nodes(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw CAN ID of each node of window ``index`` (what alerts name), and whether any of
        the node's frames is an attack frame."""
        rows = slice(self.node_ptr[index], self.node_ptr[index + 1])
        return self.can_id[rows], self.node_attack[rows]

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


class MappedGraphSet(Dataset):
    """The graphs of several parts (memory-mapped or not) as one dataset, each graph read and
    prepared only when asked for, so no split has to fit in memory; yields the same ``Data`` as
    ``GraphSet`` given the same ``prepare``: ``(raw x, can_id) → (scaled float32 x, int64 ID tokens)``.

    Only the per-window labels and attack types are held in memory (16 bytes a window).
    """

    def __init__(self, parts: Sequence[WindowGraphs], prepare: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]):
        self.parts = [part for part in parts if len(part)]
        self.prepare = prepare
        names: list[str] = ["normal"]
        for part in parts:
            names += [name for name in part.attack_names if name not in names]
        self.attack_names = tuple(names)
        self.offsets = np.cumsum([0] + [len(part) for part in self.parts])
        self.labels = torch.from_numpy(np.concatenate([np.asarray(p.y, np.int64) for p in self.parts] or [np.zeros(0, np.int64)]))
        self.attack_type = torch.from_numpy(np.concatenate(
            [np.array([names.index(n) for n in p.attack_names], np.int64)[p.attack_type] for p in self.parts]
            or [np.zeros(0, np.int64)]
        ))

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def time_span(self) -> torch.Tensor:
        """First and last frame time of every window, read on demand."""
        return torch.from_numpy(np.concatenate([np.asarray(p.time_span) for p in self.parts] or [np.zeros((0, 2))]))

    @property
    def attack_start(self) -> np.ndarray:
        """Each window's first attack frame time (NaN: none), read on demand."""
        return np.concatenate([np.asarray(p.attack_start) for p in self.parts] or [np.zeros(0)])

    @property
    def timestamps(self) -> bool:
        return all(part.timestamps for part in self.parts)

    def window_nodes(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """As ``GraphSet.window_nodes``, read from the window's part."""
        which = int(np.searchsorted(self.offsets, index, side="right")) - 1
        part, window = self.parts[which], index - int(self.offsets[which])
        rows = slice(int(part.node_ptr[window]), int(part.node_ptr[window + 1]))
        return np.asarray(part.can_id[rows]), np.asarray(part.node_attack[rows])

    def __getitem__(self, index: int) -> Data:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"graph {index} of {len(self)}")
        which = int(np.searchsorted(self.offsets, index, side="right")) - 1
        part, window = self.parts[which], index - int(self.offsets[which])
        n0, n1 = int(part.node_ptr[window]), int(part.node_ptr[window + 1])
        e0, e1 = int(part.edge_ptr[window]), int(part.edge_ptr[window + 1])
        x, id_token = self.prepare(np.asarray(part.x[n0:n1]), np.asarray(part.can_id[n0:n1]))
        return Data(
            x=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            id_token=torch.from_numpy(np.asarray(id_token, np.int64)),
            edge_index=torch.from_numpy(np.array(part.edge_index[:, e0:e1], np.int64)),
            edge_attr=torch.from_numpy(np.array(part.edge_attr[e0:e1], np.float32)).view(-1, 1),
            y=self.labels[index : index + 1],
            attack_type=self.attack_type[index : index + 1],
            num_nodes=n1 - n0,
        )


def drop_profile(batch, rate: float):
    """A batch of agnostic graphs with the vehicle block taken from a random ``rate`` of them:
    roles kept, every node unprofiled, the block zero, every token unseen — what another vehicle
    looks like. The batch given is left as it is."""
    dropped = (torch.rand(batch.num_graphs, device=batch.x.device) < rate)[batch.batch]
    without = torch.zeros_like(batch.x)
    without[:, :UNPROFILED] = batch.x[:, :UNPROFILED]
    without[:, UNPROFILED] = 1.0
    batch = copy.copy(batch)  # PyG copies the attribute store, not the tensors
    batch.x = torch.where(dropped[:, None], without, batch.x)
    batch.id_token = torch.where(dropped, torch.zeros_like(batch.id_token), batch.id_token)
    return batch


def perturb_one_node(batch, strength: float):
    """A copy of the batch with one random node of every window moved off its features by
    Gaussian noise of ``strength`` times each feature's spread in the batch: windows near those
    trained on, yet neither normal nor any attack seen, where a student learns how its teacher
    judges what lies between (``kd_noise``). The batch given is left as it is."""
    counts = torch.bincount(batch.batch, minlength=batch.num_graphs)
    present = counts > 0
    first = (torch.cumsum(counts, 0) - counts)[present]
    chosen = first + (torch.rand(len(first), device=batch.x.device) * counts[present]).long()
    x = batch.x.clone()
    spread = x.std(dim=0) if len(x) > 1 else torch.zeros_like(x[0])  # a lone node has none
    x[chosen] += torch.randn(len(chosen), x.size(1), device=x.device) * spread * strength
    batch = copy.copy(batch)  # PyG copies the attribute store, not the tensors
    batch.x = x
    return batch


def shift_off_normal(batch, strength: float, columns: Sequence[int], movable: torch.Tensor):
    """A copy of the batch in which, in every window with ``movable`` nodes, a random share of
    them (one at least) have the features ``columns`` moved together by ``strength`` of the
    batch's spreads (over movable nodes) in a random direction, and the window is labelled an
    attack: windows off normal traffic in any direction, not only the trained attacks' own, so
    that a classifier learns that whatever is off normal is an attack (``synthetic_attacks``).
    A window without movable nodes keeps its label. The batch given is left as it is."""
    x = batch.x.clone()
    columns = torch.as_tensor(columns, dtype=torch.long, device=x.device)
    features = x[:, columns]
    spread = features[movable].std(dim=0) if int(movable.sum()) > 1 else torch.zeros(len(columns), device=x.device)
    direction = torch.randn(batch.num_graphs, len(columns), device=x.device)
    direction = direction / direction.norm(dim=1, keepdim=True).clamp(min=1e-12)
    chosen = movable & (torch.rand(len(x), device=x.device) < torch.rand(batch.num_graphs, device=x.device)[batch.batch])
    # one movable node at least in every window that has one: the one with the highest random key
    key = torch.where(movable, torch.rand(len(x), device=x.device), torch.full((len(x),), -1.0, device=x.device))
    best = torch.full((batch.num_graphs,), -1.0, device=x.device).scatter_reduce(0, batch.batch, key, "amax")
    chosen |= movable & (key == best[batch.batch])
    features[chosen] += direction[batch.batch[chosen]] * spread * strength
    x[:, columns] = features
    moved = torch.zeros(batch.num_graphs, dtype=torch.bool, device=x.device).index_fill(0, batch.batch[chosen], True)
    batch = copy.copy(batch)  # PyG copies the attribute store, not the tensors
    batch.x = x
    batch.y = torch.where(moved, torch.ones_like(batch.y), batch.y)
    return batch


def labels_of(graphs: Dataset) -> torch.Tensor:
    """Window labels of a ``GraphSet``, a ``Subset`` of one, or any sequence of ``Data``."""
    if isinstance(graphs, Subset):
        return labels_of(graphs.dataset)[torch.as_tensor(graphs.indices, dtype=torch.long)]
    if hasattr(graphs, "labels"):
        return graphs.labels
    return torch.cat([graph.y.view(-1) for graph in graphs]) if len(graphs) else torch.empty(0, dtype=torch.long)
