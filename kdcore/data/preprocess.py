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
    """Vocabulary (sorted CAN IDs; index 0 is reserved for unseen IDs) and per-feature mean/std.

    A feature value may be absent (NaN: timing features of a capture without timestamps): the
    mean and std are fitted on the values present, and scaling puts an absent value at 0, the
    training mean.
    """

    vocabulary: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    @property
    def num_ids(self) -> int:
        return len(self.vocabulary) + 1

    @classmethod
    def fit(cls, graphs: WindowGraphs) -> Preprocessing:
        """Fit on the attack-free windows of ``graphs`` only."""
        return cls.fit_parts([graphs])

    @classmethod
    def fit_parts(cls, parts: Sequence[WindowGraphs]) -> Preprocessing:
        """``fit`` on the concatenation of ``parts``, reading a slice of windows at a time, so the
        parts may be memory-mapped and bigger than memory.

        numpy sums a column (``axis=0``) row after row; each slice carries the running sum into its
        first row, so the additions happen in the same order as over the whole array.
        """
        count, total, vocabulary = 0, np.zeros(0), np.zeros(0, np.uint32)
        for x, can_id in _normal_nodes(parts):
            present = ~np.isnan(x)
            count = count + present.sum(axis=0)
            total = _running_sum(total, np.where(present, x, 0.0))
            vocabulary = np.union1d(vocabulary, can_id)
        if len(vocabulary) == 0:
            raise ValueError("no attack-free training windows to fit the vocabulary and scaling on")
        mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        squares = np.zeros(0)
        for x, _ in _normal_nodes(parts):
            squares = _running_sum(squares, np.nan_to_num((x - mean) ** 2, nan=0.0))
        std = np.sqrt(squares / np.maximum(count, 1))
        return cls(vocabulary=vocabulary, mean=mean, std=np.where(std > 1e-8, std, 1.0))

    def id_token(self, can_id: np.ndarray) -> np.ndarray:
        position = np.searchsorted(self.vocabulary, can_id)
        found = position < len(self.vocabulary)
        found[found] = self.vocabulary[position[found]] == can_id[found]
        return np.where(found, position + 1, OUT_OF_VOCABULARY)

    def scale(self, x: np.ndarray) -> np.ndarray:
        """Scaled float32 features; an absent (NaN) value becomes 0, the training mean."""
        return np.nan_to_num((x - self.mean) / self.std, nan=0.0).astype(np.float32)

    def apply(self, graphs: WindowGraphs) -> GraphSet:
        from kdcore.data.graphset import GraphSet

        return GraphSet(graphs, self.scale(graphs.x), self.id_token(graphs.can_id))

    def prepare(self, x: np.ndarray, can_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One graph's nodes as ``apply`` prepares them: scaled float32 features and ID tokens."""
        return self.scale(x), self.id_token(can_id).astype(np.int64)

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
