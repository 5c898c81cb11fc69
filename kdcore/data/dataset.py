"""What a dataset plugin is: a named source of train, validation and test window graphs.

A dataset plugin subclasses ``CanDataset`` and implements ``load_splits``. It needs no Lightning:
the engine wraps it in a ``GraphDataModule`` (``kdcore.data.module``) to serve loaders, so listing
datasets, or building their graphs, starts without the training stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import attrs

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from kdcore.config import RunConfig
    from kdcore.data.formats.registry import Formats


@attrs.frozen
class DataInfo:
    """What a model needs to know about the data to be built."""

    num_node_features: int
    num_ids: int  # size of the CAN-ID vocabulary, including the out-of-vocabulary index 0
    num_classes: int = 2


@attrs.frozen
class Splits:
    """Time-ordered splits of window graphs, and what must be saved with a model trained on them."""

    train: Dataset
    val: Dataset
    tests: dict[str, Dataset]
    info: DataInfo
    state: dict[str, Any] = attrs.field(factory=dict)  # e.g. vocabulary and feature scaling


class CanDataset:
    """A dataset: its ``name``, a docstring whose first line describes it, and ``load_splits``.

    :param config: the run's ``RunConfig`` (``data_root``, ``seed``, window settings, ...).
    :param formats: the capture formats to read with (None: the installed ones).
    """

    name: ClassVar[str]

    def __init__(self, config: RunConfig, formats: Formats | None = None):
        self.config = config
        self.formats = formats

    def load_splits(self) -> Splits:
        """Train, validation and named test sets of prepared graphs (``kdcore.data.graphset``)."""
        raise NotImplementedError
