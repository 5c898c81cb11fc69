"""Teacher outputs computed once per training set and teacher, looked up by graph every epoch after.

The teacher is frozen and runs in eval mode, so its outputs for a training graph never change:
computing them again each epoch is pure overhead. ``Numbered`` makes each training graph carry
its position (``graph_id``) through shuffling, sampling and batching; ``TeacherCache`` stores the
outputs a strategy needs, graph by graph, and gathers a batch's rows in the batch's order.

The outputs are stored in ``{experiment_root}/cache/teacher/`` under a key made of the teacher
checkpoint's and the training graphs' content, so the next run with the same teacher and data
(another seed, another student size) reads them instead of running the teacher at all.

The cache assumes what every built-in mode satisfies: a graph's outputs depend on that graph
alone, not on the other graphs in its batch (no batch statistics in eval mode).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from kdcore.atomic import atomic_open
from kdcore.data.cache import file_digest
from kdcore.data.graphset import GraphSet, MappedGraphSet, labels_of

logger = logging.getLogger("kdcore")

if TYPE_CHECKING:
    from torch_geometric.loader import DataLoader

    from kdcore.contracts import TrainingMode
    from kdcore.distill import FrozenTeacher


class Numbered(Dataset):
    """A graph dataset whose items carry ``graph_id``, their index in it. It stands in for the
    training split after training too, so it reads out what the split does: labels, attack names
    and each window's nodes (the attack classes are fitted on them, ``kdcore.metrics``)."""

    def __init__(self, graphs: Dataset):
        self.graphs = graphs

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, index: int):
        data = self.graphs[index]
        data.graph_id = index  # a stored graph gets its own index, the same each time; collated to a tensor
        return data

    @property
    def labels(self) -> torch.Tensor:
        return labels_of(self.graphs)

    @property
    def attack_names(self) -> tuple[str, ...] | None:
        return getattr(self.graphs, "attack_names", None)

    def window_nodes(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.graphs.window_nodes(index)


class TeacherCache:
    """Named teacher outputs for every graph of a ``Numbered`` set, stored flat with per-graph offsets.

    An output with one row per node (a latent, a reconstruction) keeps a graph's node rows; one with
    a row per graph (logits) keeps one row. Either way ``lookup`` returns rows in the batch's order.
    """

    def __init__(self, values: dict[str, torch.Tensor], starts: dict[str, torch.Tensor], counts: dict[str, torch.Tensor]):
        self.values = values
        self.starts = starts
        self.counts = counts

    @classmethod
    @torch.no_grad()
    def compute(
        cls, teacher: FrozenTeacher, mode: TrainingMode, loader: DataLoader, names: tuple[str, ...],
        device: torch.device, progress: bool = False,
    ) -> TeacherCache:
        """One pass of the teacher over ``loader`` (which must not shuffle) in graph order.

        The pass runs on a forked CPU random state (a ``DataLoader`` draws a seed even when it does
        not shuffle), so a cached run trains on the same random stream as an uncached one.
        """
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        sizes: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        with torch.random.fork_rng(devices=[]):
            for batch in tqdm(loader, desc="teacher outputs", unit="batch", disable=not progress, leave=False):
                batch = batch.to(device)
                outputs = teacher.outputs(mode, batch, names)
                nodes_per_graph = torch.diff(batch.ptr)
                for name in names:
                    value = outputs[name]
                    per_node = value.dim() > 0 and value.size(0) == batch.num_nodes != batch.num_graphs
                    parts[name].append(value)
                    sizes[name].append(nodes_per_graph if per_node else torch.ones_like(nodes_per_graph))
        values = {name: torch.cat(parts[name]) for name in names}
        counts = {name: torch.cat(sizes[name]) for name in names}
        starts = {name: torch.cumsum(counts[name], 0) - counts[name] for name in names}
        return cls(values, starts, counts)

    @classmethod
    def load_or_compute(cls, folder: Path | None, key: str | None, compute) -> TeacherCache:
        """The outputs stored under ``key`` in ``folder``, else ``compute()``'d and stored there.

        ``key`` None (a dataset kdcore cannot fingerprint) keeps them in memory for this run only.
        An unreadable stored file is recomputed and replaced.
        """
        path = folder / f"{key}.pt" if folder is not None and key is not None else None
        if path is not None and path.is_file():
            try:
                return cls(**torch.load(path, map_location="cpu", weights_only=True))
            except Exception as error:  # noqa: BLE001 - a damaged cache entry is rebuilt, not fatal
                logger.warning("teacher-output cache %s unreadable (%s); recomputing", path, error)
        cache = compute()
        if path is not None:
            with atomic_open(path, "wb") as handle:
                torch.save({"values": cache.values, "starts": cache.starts, "counts": cache.counts}, handle)
        return cache

    def to(self, device: torch.device) -> TeacherCache:
        def move(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {name: tensor.to(device) for name, tensor in tensors.items()}

        return TeacherCache(move(self.values), move(self.starts), move(self.counts))

    def lookup(self, batch: Any) -> dict[str, torch.Tensor]:
        """The cached outputs for the graphs of ``batch`` (which carries ``graph_id``)."""
        graph_id = batch.graph_id.to(next(iter(self.values.values())).device)
        return {name: values[_rows(self.starts[name][graph_id], self.counts[name][graph_id])] for name, values in self.values.items()}


def cache_key(teacher_path: str | Path, mode_name: str, names: tuple[str, ...], data_state: dict, graphs: Dataset) -> str | None:
    """The teacher checkpoint's content, the mode, the outputs, the preprocessing and the training
    graphs' content; None when the graphs are not a set kdcore built (nothing to fingerprint)."""
    graphs_digest = content_digest(graphs)
    if graphs_digest is None:
        return None
    identity = {"teacher": file_digest(teacher_path), "mode": mode_name, "outputs": list(names), "data": data_state,
                "graphs": graphs_digest}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:32]


def content_digest(graphs: Dataset) -> str | None:
    """SHA-256 of every array of a ``GraphSet`` or ``MappedGraphSet`` (read through, not copied)."""
    if isinstance(graphs, Numbered):
        graphs = graphs.graphs
    if isinstance(graphs, GraphSet):
        arrays = [t.numpy() for t in (graphs.x, graphs.id_token, graphs.edge_index, graphs.edge_attr, graphs.labels)]
        arrays += [np.asarray(graphs.node_ptr), np.asarray(graphs.edge_ptr)]
    elif isinstance(graphs, MappedGraphSet):
        fields = ("x", "can_id", "node_ptr", "edge_index", "edge_attr", "edge_ptr", "y")
        arrays = [np.asarray(getattr(part, field)) for part in graphs.parts for field in fields]
    else:
        return None
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str((array.dtype, array.shape)).encode())
        digest.update(np.ascontiguousarray(array))
    return digest.hexdigest()


def _rows(starts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``cat(arange(s, s + c) for s, c in zip(starts, counts))`` without a Python loop."""
    offsets = torch.cumsum(counts, 0) - counts
    return torch.repeat_interleave(starts - offsets, counts) + torch.arange(int(counts.sum()), device=counts.device)
