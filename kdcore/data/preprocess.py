"""What is fitted on attack-free training windows and saved with the model: the CAN-ID
vocabulary and the feature scaling. Inference maps IDs and scales features exactly the same way."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from kdcore.data.graphs import GraphSet, WindowGraphs

OUT_OF_VOCABULARY = 0


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

    def id_token(self, can_id: np.ndarray) -> np.ndarray:
        position = np.searchsorted(self.vocabulary, can_id)
        found = position < len(self.vocabulary)
        found[found] = self.vocabulary[position[found]] == can_id[found]
        return np.where(found, position + 1, OUT_OF_VOCABULARY)

    def apply(self, graphs: WindowGraphs) -> GraphSet:
        x = (graphs.x - self.mean) / self.std
        return GraphSet(graphs, x.astype(np.float32), self.id_token(graphs.can_id))

    def to_dict(self) -> dict[str, Any]:
        return {"vocabulary": self.vocabulary.tolist(), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            vocabulary=np.asarray(data["vocabulary"], dtype=np.uint32),
            mean=np.asarray(data["mean"], dtype=np.float64),
            std=np.asarray(data["std"], dtype=np.float64),
        )
