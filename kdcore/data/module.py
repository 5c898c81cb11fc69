"""The Lightning data module around a dataset plugin.

``GraphDataModule`` turns a ``CanDataset``'s time-ordered splits into PyG loaders, offers the
normal-only view autoencoders train on, and lets a mode choose which training graphs each epoch
sees (curriculum sampling).
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset
from torch_geometric.loader import DataLoader

from kdcore.data.dataset import CanDataset, DataInfo, Splits
from kdcore.data.graphset import labels_of


class GraphDataModule(L.LightningDataModule):
    """Train/validation/test graphs of a dataset as PyG loaders; ``tests`` may hold several named test sets."""

    def __init__(self, dataset: CanDataset, *, normal_only: bool = False):
        super().__init__()
        self.dataset = dataset
        self.config = dataset.config
        self.normal_only = normal_only
        self.splits: Splits | None = None
        # A mode may pick the training graphs of each epoch (indices into train_set).
        self.epoch_sampler: Callable[[int], torch.Tensor] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            self.splits = self.dataset.load_splits()

    @property
    def info(self) -> DataInfo:
        return self.splits.info

    @property
    def train_set(self) -> Dataset:
        return self.splits.train

    @property
    def val_set(self) -> Dataset:
        return self.splits.val

    @property
    def test_sets(self) -> dict[str, Dataset]:
        return self.splits.tests

    @staticmethod
    def normal(graphs: Dataset) -> Subset:
        return Subset(graphs, torch.nonzero(labels_of(graphs) == 0).view(-1).tolist())

    def class_counts(self) -> list[int]:
        return torch.bincount(labels_of(self.train_set), minlength=self.info.num_classes).tolist()

    def loader(self, graphs: Dataset, shuffle: bool = False) -> DataLoader:
        return DataLoader(graphs, batch_size=self.config.batch_size, shuffle=shuffle, num_workers=self.config.num_workers)

    def train_dataloader(self) -> DataLoader:
        graphs = self.train_set
        if self.epoch_sampler is not None:
            epoch = self.trainer.current_epoch if self.trainer is not None else 0
            graphs = Subset(graphs, self.epoch_sampler(epoch).tolist())
        elif self.normal_only:
            graphs = self.normal(graphs)
        return self.loader(graphs, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.normal(self.val_set) if self.normal_only else self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self.loader(ConcatDataset(list(self.test_sets.values())))
