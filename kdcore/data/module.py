"""The Lightning data module every kdcore dataset plugin provides.

A dataset plugin subclasses ``GraphDataModule`` and implements ``load_splits``; the base class
turns the time-ordered splits into PyG loaders, offers the normal-only view autoencoders train
on, and lets a mode choose which training graphs each epoch sees (curriculum sampling).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar

import attrs
import lightning as L
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

if TYPE_CHECKING:
    from kdcore.config import RunConfig


@attrs.frozen
class DataInfo:
    """What a model needs to know about the data to be built."""

    num_node_features: int
    num_ids: int  # size of the CAN-ID vocabulary, including the out-of-vocabulary index
    num_classes: int = 2


def labels_of(graphs: Sequence[Data]) -> torch.Tensor:
    return torch.cat([graph.y.view(-1) for graph in graphs]) if graphs else torch.empty(0, dtype=torch.long)


class GraphDataModule(L.LightningDataModule):
    """Train/validation/test graphs, split in time order, as PyG loaders."""

    name: ClassVar[str]

    def __init__(self, config: RunConfig, *, normal_only: bool = False):
        super().__init__()
        self.config = config
        self.normal_only = normal_only
        self.train_graphs: list[Data] = []
        self.val_graphs: list[Data] = []
        self.test_graphs: list[Data] = []
        self.info: DataInfo | None = None
        # A mode may pick the training graphs of each epoch (indices into train_graphs).
        self.epoch_sampler: Callable[[int], torch.Tensor] | None = None
        self._loaded = False

    def load_splits(self) -> tuple[list[Data], list[Data], list[Data], DataInfo]:
        """Return time-ordered (train, validation, test) graphs and the ``DataInfo``."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self._loaded:
            self.train_graphs, self.val_graphs, self.test_graphs, self.info = self.load_splits()
            self._loaded = True

    def normal(self, graphs: Sequence[Data]) -> list[Data]:
        return [graph for graph in graphs if int(graph.y) == 0]

    def class_counts(self) -> list[int]:
        counts = torch.bincount(labels_of(self.train_graphs), minlength=self.info.num_classes)
        return counts.tolist()

    def loader(self, graphs: Sequence[Data], shuffle: bool = False) -> DataLoader:
        return DataLoader(
            list(graphs),
            batch_size=self.config.batch_size,
            shuffle=shuffle,
            num_workers=self.config.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        graphs = self.normal(self.train_graphs) if self.normal_only else self.train_graphs
        if self.epoch_sampler is not None:
            epoch = self.trainer.current_epoch if self.trainer is not None else 0
            graphs = [graphs[i] for i in self.epoch_sampler(epoch).tolist()]
        return self.loader(graphs, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        graphs = self.normal(self.val_graphs) if self.normal_only else self.val_graphs
        return self.loader(graphs)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.test_graphs)
