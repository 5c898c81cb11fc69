"""What is fitted on attack-free training windows and saved with the model: the CAN-ID
vocabulary and the feature scaling. Inference maps IDs and scales features exactly the same way."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from kdcore.data.graphs import WindowGraphs

if TYPE_CHECKING:
    from kdcore.data.graphset import GraphSet, MappedGraphSet

OUT_OF_VOCABULARY = 0
WINDOWS_PER_STEP = 1 << 16  # windows read at a time when fitting on parts that may not fit in memory


@attrs.frozen(eq=False)
class Preprocessing:
    """Vocabulary (sorted CAN IDs; index 0 is reserved for unseen IDs) and per-feature mean/std."""

    vocabulary: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    @property
    def num_ids(self) -> int:
        return len(self.vocabulary) + 1

    @classmethod
    def fit(cls, graphs: WindowGraphs) -> Preprocessing:
        """Fit on the attack-free windows of ``graphs`` only."""
        normal_rows = graphs.node_rows(np.flatnonzero(graphs.y == 0))
        if len(normal_rows) == 0:
            raise ValueError("no attack-free training windows to fit the vocabulary and scaling on")
        x = graphs.x[normal_rows].astype(np.float64)
        std = x.std(axis=0)
        return cls(
            vocabulary=np.unique(graphs.can_id[normal_rows]),
            mean=x.mean(axis=0),
            std=np.where(std > 1e-8, std, 1.0),
        )

    @classmethod
    def fit_parts(cls, parts: Sequence[WindowGraphs]) -> Preprocessing:
        """``fit`` on the concatenation of ``parts``, reading a slice of windows at a time, so the
        parts may be memory-mapped and bigger than memory; the result is equal to ``fit``'s, bit for bit.

        numpy sums a column (``axis=0``) row after row; each slice carries the running sum into its
        first row, so the additions happen in the same order as over the whole array.
        """
        count, total, vocabulary = 0, np.zeros(0), np.zeros(0, np.uint32)
        for x, can_id in _normal_nodes(parts):
            count += len(x)
            total = _running_sum(total, x)
            vocabulary = np.union1d(vocabulary, can_id)
        if count == 0:
            raise ValueError("no attack-free training windows to fit the vocabulary and scaling on")
        mean = total / count
        squares = np.zeros(0)
        for x, _ in _normal_nodes(parts):
            squares = _running_sum(squares, (x - mean) ** 2)
        std = np.sqrt(squares / count)
        return cls(vocabulary=vocabulary, mean=mean, std=np.where(std > 1e-8, std, 1.0))

    def id_token(self, can_id: np.ndarray) -> np.ndarray:
        position = np.searchsorted(self.vocabulary, can_id)
        found = position < len(self.vocabulary)
        found[found] = self.vocabulary[position[found]] == can_id[found]
        return np.where(found, position + 1, OUT_OF_VOCABULARY)

    def apply(self, graphs: WindowGraphs) -> GraphSet:
        from kdcore.data.graphset import GraphSet

        x = (graphs.x - self.mean) / self.std
        return GraphSet(graphs, x.astype(np.float32), self.id_token(graphs.can_id))

    def prepare(self, x: np.ndarray, can_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One graph's nodes as ``apply`` prepares them: scaled float32 features and ID tokens."""
        return ((x - self.mean) / self.std).astype(np.float32), self.id_token(can_id).astype(np.int64)

    def apply_lazily(self, parts: Sequence[WindowGraphs]) -> MappedGraphSet:
        """The same graphs as ``apply(WindowGraphs.concat(parts))``, each prepared when it is read."""
        from kdcore.data.graphset import MappedGraphSet

        return MappedGraphSet(parts, self.prepare)

    def to_dict(self) -> dict[str, Any]:
        return {"vocabulary": self.vocabulary.tolist(), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            vocabulary=np.asarray(data["vocabulary"], dtype=np.uint32),
            mean=np.asarray(data["mean"], dtype=np.float64),
            std=np.asarray(data["std"], dtype=np.float64),
        )


def _normal_nodes(parts: Sequence[WindowGraphs]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(float64 features, CAN IDs) of the nodes of attack-free windows, a slice of windows at a time."""
    for part in parts:
        for first in range(0, len(part), WINDOWS_PER_STEP):
            windows = np.flatnonzero(np.asarray(part.y[first : first + WINDOWS_PER_STEP]) == 0) + first
            rows = part.node_rows(windows)
            if len(rows):
                yield np.asarray(part.x[rows], np.float64), np.asarray(part.can_id[rows])


def _running_sum(total: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``total`` plus the column sums of ``rows`` (float64, modified), added in row order."""
    if len(total):
        rows[0] += total
    return rows.sum(axis=0)
