"""Datasets read from captures on disk: a can-train-and-test folder, or any capture file(s).

The can-train-and-test (``ctt``) layout is how the six standard datasets are distributed::

    DATASET/train_01_attack_free/*.csv
    DATASET/train_02_with_attacks/*.csv
    DATASET/test_01_<name>/*.csv ... test_0N_<name>/*.csv

Training and validation windows come from the ``train_*`` folders — each file split in time
order, so no window spans two splits — and each ``test_*`` folder is its own test set, reported
separately. A single capture file (any format) or a folder of captures without that layout is
split in time order into train, validation and test.
"""

from __future__ import annotations

from pathlib import Path

import attrs
from tqdm.auto import tqdm

from kdcore.data.cache import GraphCache, cache_key
from kdcore.data.formats import read_capture
from kdcore.data.formats.labels import SUFFIX as SIDECAR_SUFFIX
from kdcore.data.frames import FrameTable
from kdcore.data.graphs import WindowGraphs
from kdcore.data.module import DataInfo, GraphDataModule, Splits
from kdcore.data.preprocess import Preprocessing
from kdcore.data.windows import FEATURES, build_window_graphs
from kdcore.errors import KdcoreError

CAPTURE_SUFFIXES = (".csv", ".log", ".trc", ".asc", ".blf", ".txt")


def ctt_folders(root: Path) -> tuple[list[Path], dict[str, list[Path]]] | None:
    """(train files, {test name: files}) if ``root`` is in the ctt layout, else None."""
    if not root.is_dir():
        return None
    train_dirs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("train_"))
    test_dirs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("test_"))
    if not train_dirs:
        return None
    def csvs(folder: Path) -> list[Path]:
        return sorted(f for f in folder.glob("*.csv") if not f.name.endswith(SIDECAR_SUFFIX))

    train = [f for folder in train_dirs for f in csvs(folder)]
    tests = {folder.name: csvs(folder) for folder in test_dirs}
    return train, {name: files for name, files in tests.items() if files}


def capture_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    files = sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in CAPTURE_SUFFIXES and not p.name.endswith(SIDECAR_SUFFIX)
    )
    if not files:
        raise KdcoreError(f"{root}: no capture files found (looked for {', '.join(CAPTURE_SUFFIXES)})")
    return files


class CaptureDataModule(GraphDataModule):
    """Any capture file or folder given by --data-root (split in time order), or a ctt dataset folder."""

    name = "captures"

    def data_root(self) -> Path:
        if not self.config.data_root:
            raise KdcoreError(f"dataset {self.config.dataset!r} needs --data-root DIR (a can-train-and-test folder or a capture)")
        root = Path(self.config.data_root)
        if not root.exists():
            raise KdcoreError(f"data root not found: {root}")
        return root

    def load_splits(self) -> Splits:
        root = self.data_root()
        cache = GraphCache(self.cache_dir())
        layout = ctt_folders(root)
        val = self.config.val_fraction
        if layout is not None:
            train_files, test_files = layout
            if not train_files:
                raise KdcoreError(f"{root}: the train_* folders hold no CSV files")
            jobs = [(f, "train", 0.0, 1.0 - val) for f in train_files]
            jobs += [(f, "val", 1.0 - val, 1.0) for f in train_files]
            jobs += [(f, name, 0.0, 1.0) for name, files in test_files.items() for f in files]
        else:
            files = capture_files(root)
            test = self.config.test_fraction
            bounds = {"train": (0.0, 1.0 - val - test), "val": (1.0 - val - test, 1.0 - test), "test": (1.0 - test, 1.0)}
            jobs = [(f, split, *bounds[split]) for split in bounds for f in files]

        parts: dict[str, list[WindowGraphs]] = {}
        for path, split, start, stop in tqdm(jobs, desc="graphs", unit="part", disable=not self.config.progress_bar, leave=False):
            parts.setdefault(split, []).append(self.graphs_of(cache, path, start, stop))
        merged = {split: WindowGraphs.concat(graph_parts) for split, graph_parts in parts.items()}
        train, val_graphs = merged.pop("train"), merged.pop("val")
        if len(train) == 0:
            raise KdcoreError(f"{root}: too few frames for a single training window of {self.config.window_size}")
        preprocessing = Preprocessing.fit(train)
        info = DataInfo(num_node_features=len(FEATURES), num_ids=preprocessing.num_ids)
        return Splits(
            train=preprocessing.apply(train),
            val=preprocessing.apply(val_graphs),
            tests={name: preprocessing.apply(graphs) for name, graphs in merged.items()},
            info=info,
            state={"preprocessing": preprocessing.to_dict(), **self.window_parameters()},
        )

    def cache_dir(self) -> Path:
        return Path(self.config.cache_dir or Path(self.config.experiment_root) / "cache" / "graphs")

    def window_parameters(self) -> dict:
        return {
            "window_size": self.config.window_size,
            "window_stride": self.config.window_stride,
            "label_threshold": self.config.label_threshold,
        }

    def graphs_of(self, cache: GraphCache, path: Path, start: float, stop: float) -> WindowGraphs:
        return GraphRecipe.from_config(self.config).graphs(cache, path, start, stop)


@attrs.frozen
class GraphRecipe:
    """Everything that decides the graphs of a capture; the cache key is made of it."""

    window_size: int = 100
    window_stride: int = 100
    label_threshold: float = 0.0
    capture_format: str | None = None
    on_bad_rows: str = "error"

    @classmethod
    def from_config(cls, config) -> GraphRecipe:
        return cls(config.window_size, config.window_stride, config.label_threshold, config.capture_format, config.on_bad_rows)

    def graphs(self, cache: GraphCache, path: Path, start: float = 0.0, stop: float = 1.0) -> WindowGraphs:
        """Graphs of the frames between fractions ``start`` and ``stop`` of one capture, cached."""

        def build() -> WindowGraphs:
            table = read_capture(path, self.capture_format, self.on_bad_rows)
            return build_window_graphs(time_slice(table, start, stop), self.window_size, self.window_stride, self.label_threshold)

        return cache.get_or_build(cache_key(path, **attrs.asdict(self), start=start, stop=stop), build)


def time_slice(table: FrameTable, start: float, stop: float) -> FrameTable:
    """Frames from fraction ``start`` to ``stop`` of the table, in order."""
    n = len(table)
    return table.take(slice(int(round(start * n)), int(round(stop * n))))


class CttDataset(CaptureDataModule):
    """A standard dataset held in the can-train-and-test layout under ``--data-root``."""

    def load_splits(self) -> Splits:
        root = self.data_root()
        if ctt_folders(root) is None:
            raise KdcoreError(f"{root}: dataset {self.name!r} expects the can-train-and-test layout (train_*/ and test_*/ folders of CSV files)")
        return super().load_splits()


def ctt_dataset(name: str) -> type[CttDataset]:
    return type(f"Ctt_{name}", (CttDataset,), {"name": name, "__doc__": f"``{name}`` in the can-train-and-test layout."})


STANDARD_DATASETS = [ctt_dataset(name) for name in ("hcrl_ch", "hcrl_sa", "set_01", "set_02", "set_03", "set_04")]
