"""Datasets read from captures on disk: a can-train-and-test folder, or any capture file(s).

The can-train-and-test (``ctt``) layout is how the six standard datasets are distributed::

    DATASET/train_01_attack_free/*.csv
    DATASET/train_02_with_attacks/*.csv
    DATASET/test_01_<name>/*.csv ... test_0N_<name>/*.csv

Training and validation windows come from the ``train_*`` folders — each file split in time
order, so no window spans two splits — and each ``test_*`` folder is its own test set, reported
separately. A single capture file (any format) or a folder of captures without that layout is
split in time order into train, validation and test.

A dataset whose captures add up to more than ``stream_threshold_bytes()`` (64 MiB, or
``KDCORE_STREAM_MIB``) is streamed: each capture is read in chunks, its graphs are written to the
cache chunk by chunk and read back memory-mapped, and the splits prepare each graph as it is read
(``MappedGraphSet``), so memory stays bounded however big the captures are. Smaller datasets are
read whole and held in memory, as before; both give the same graphs.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs

from kdcore.data.cache import GraphCache, cache_key
from kdcore.data.dataset import CanDataset, DataInfo, Splits
from kdcore.data.formats import read_capture, resolve_format
from kdcore.data.formats.base import CaptureFormat
from kdcore.data.formats.chunks import capture_chunks, frame_index
from kdcore.data.formats.labels import SUFFIX as SIDECAR_SUFFIX
from kdcore.data.formats.labels import Interval, apply_intervals
from kdcore.data.formats.layout import Layout, LayoutFormat, load_layout
from kdcore.data.formats.registry import Formats
from kdcore.data.frames import FrameTable
from kdcore.data.graphs import WindowGraphs
from kdcore.data.preprocess import Preprocessing
from kdcore.data.windows import FEATURES, build_window_graphs, build_window_graphs_chunked, node_keys
from kdcore.errors import KdcoreError

CAPTURE_SUFFIXES = (".csv", ".tsv", ".log", ".trc", ".asc", ".blf", ".txt")
STREAM_MIB = 64  # captures bigger than this in all are streamed (KDCORE_STREAM_MIB overrides)


def stream_threshold_bytes() -> int:
    """Total capture size above which graphs are built in chunks and kept on disk."""
    value = os.environ.get("KDCORE_STREAM_MIB", "").strip()
    try:
        mib = float(value) if value else STREAM_MIB
    except ValueError:
        mib = -1.0
    if not mib >= 0:
        raise KdcoreError(f"KDCORE_STREAM_MIB must be a number of MiB >= 0, got {value!r}")
    return int(mib * (1 << 20))


def should_stream(files: Sequence[Path], stream: bool | None = None) -> bool:
    """``stream`` when given, else whether ``files`` add up to more than the threshold."""
    if stream is not None:
        return stream
    return sum(Path(f).stat().st_size for f in set(files)) > stream_threshold_bytes()


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


def split_jobs(root: Path, val_fraction: float, test_fraction: float) -> list[tuple[Path, str, float, float]]:
    """(capture, split, start, stop) for every part a dataset under ``root`` is cut into: each
    ctt training file into train and validation, each test folder whole; any other captures into
    train, validation and test. Each part is one graph-cache entry."""
    layout = ctt_folders(root)
    val = val_fraction
    if layout is not None:
        train_files, test_files = layout
        if not train_files:
            raise KdcoreError(f"{root}: the train_* folders hold no CSV files")
        jobs = [(f, "train", 0.0, 1.0 - val) for f in train_files]
        jobs += [(f, "val", 1.0 - val, 1.0) for f in train_files]
        return jobs + [(f, name, 0.0, 1.0) for name, files in test_files.items() for f in files]
    files = capture_files(root)
    test = test_fraction
    bounds = {"train": (0.0, 1.0 - val - test), "val": (1.0 - val - test, 1.0 - test), "test": (1.0 - test, 1.0)}
    return [(f, split, *bounds[split]) for split in bounds for f in files]


def by_capture(jobs: list[tuple[Path, str, float, float]]) -> list[tuple[Path, str, float, float]]:
    """The jobs with each capture's parts together (each split keeps its captures' order), so a
    capture read for one part is still at hand for the next."""
    return sorted(jobs, key=lambda job: str(job[0]))


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


class CaptureDataset(CanDataset):
    """Any capture file or folder given by --data-root (split in time order), or a ctt dataset folder."""

    name = "captures"

    def data_root(self) -> Path:
        if not self.config.data_root:
            raise KdcoreError(f"dataset {self.config.dataset!r} needs --data-root DIR (a can-train-and-test folder or a capture)")
        root = Path(self.config.data_root)
        if not root.exists():
            raise KdcoreError(f"data root not found: {root}")
        return root

    def jobs(self, root: Path) -> list[tuple[Path, str, float, float]]:
        """(capture, split, start, stop) of every part the dataset is cut into (see ``split_jobs``)."""
        return split_jobs(root, self.config.val_fraction, self.config.test_fraction)

    def recipe(self, path: Path) -> GraphRecipe:
        """How the graphs of one capture are built: the config's settings (a dataset may add labels)."""
        return GraphRecipe.from_config(self.config, formats=self.formats)

    def load_splits(self) -> Splits:
        from tqdm.auto import tqdm

        root = self.data_root()
        cache = GraphCache(self.cache_dir())
        jobs = self.jobs(root)
        stream = should_stream([path for path, *_ in jobs])
        parts: dict[str, list[WindowGraphs]] = {}
        strides = {"train": self.config.train_window_stride or self.config.window_stride}  # the other splits: window_stride
        for path, split, start, stop in tqdm(by_capture(jobs), desc="graphs", unit="part", disable=not self.config.progress_bar, leave=False):
            stride = strides.get(split, self.config.window_stride)
            parts.setdefault(split, []).append(self.graphs_of(cache, path, start, stop, stream, stride))
        if sum(len(graphs) for graphs in parts["train"]) == 0:
            raise KdcoreError(f"{root}: too few frames for a single training window of {self.config.window_size}")
        if any(graphs.mapped for graph_parts in parts.values() for graphs in graph_parts):
            # streamed: the graphs stay on disk and each is scaled as it is read
            preprocessing = Preprocessing.fit_parts(parts["train"], self.config.representation)
            prepared = {split: preprocessing.apply_lazily(graph_parts) for split, graph_parts in parts.items()}
        else:
            merged = {split: WindowGraphs.concat(graph_parts) for split, graph_parts in parts.items()}
            preprocessing = Preprocessing.fit(merged["train"], self.config.representation)
            prepared = {split: preprocessing.apply(graphs) for split, graphs in merged.items()}
        info = DataInfo(num_node_features=preprocessing.num_features, num_ids=preprocessing.num_ids)
        timestamps = all(graphs.timestamps for graphs in parts["train"])
        train, val_graphs = prepared.pop("train"), prepared.pop("val")
        return Splits(
            train=train,
            val=val_graphs,
            tests=prepared,
            info=info,
            state={"preprocessing": preprocessing.to_dict(), "timestamps": timestamps, **self.window_parameters()},
        )

    def cache_dir(self) -> Path:
        return Path(self.config.cache_dir or Path(self.config.experiment_root) / "cache" / "graphs")

    def window_parameters(self) -> dict:
        parameters = {
            "window_size": self.config.window_size,
            "window_stride": self.config.window_stride,
            "label_threshold": self.config.label_threshold,
            "graph_node": self.config.graph_node,
        }
        if self.config.train_window_stride not in (None, self.config.window_stride):
            # only where it differs: models trained before it existed keep their data state (a teacher's must match)
            parameters["train_window_stride"] = self.config.train_window_stride
        return parameters

    def graphs_of(self, cache: GraphCache, path: Path, start: float, stop: float, stream: bool | None, stride: int) -> WindowGraphs:
        return attrs.evolve(self.recipe(path), stream=stream, window_stride=stride).graphs(cache, path, start, stop)


@attrs.frozen
class GraphRecipe:
    """Everything that decides the graphs of a capture; the cache key is made of it.

    How the capture is read: with ``layout`` when given, else the format named ``capture_format``,
    else the one its content shows, among ``formats`` (None: the installed ones).
    ``stream`` and ``formats`` are how the graphs are built, not what they are (so not in the key):
    ``stream`` True reads the capture in chunks and writes the graphs to a memory-mapped cache
    folder; None decides by its size.
    """

    window_size: int = 100
    window_stride: int = 100
    label_threshold: float = 0.0
    capture_format: str | None = None
    on_bad_rows: str = "error"
    graph_node: str = "can_id"
    labels: tuple[Interval, ...] = ()  # attack intervals applied over the capture's own labels, like a sidecar's
    layout: Layout | None = None
    stream: bool | None = attrs.field(default=None, kw_only=True)
    formats: Formats | None = attrs.field(default=None, kw_only=True, eq=False)

    @classmethod
    def from_config(cls, config, **more) -> GraphRecipe:
        layout = load_layout(config.capture_layout) if config.capture_layout else None
        return cls(config.window_size, config.window_stride, config.label_threshold, config.capture_format, config.on_bad_rows,
                   config.graph_node, layout=layout, **more)

    def capture_format_of(self, path: Path) -> CaptureFormat:
        """The format this recipe reads ``path`` with."""
        return _format_of(Path(path), self.capture_format, self.layout, self.formats)

    def graphs(self, cache: GraphCache, path: Path, start: float = 0.0, stop: float = 1.0) -> WindowGraphs:
        """Graphs of the frames between fractions ``start`` and ``stop`` of one capture, cached."""
        identity = attrs.asdict(self, filter=lambda field, _: field.name not in ("stream", "formats"))
        key = cache_key(path, **identity, start=start, stop=stop)
        if should_stream([path], self.stream):
            return cache.get_or_write(key, len(FEATURES), lambda writer: self.write(writer, path, start, stop))

        def build() -> WindowGraphs:
            table = node_keys(time_slice(self.read(path), start, stop), self.graph_node)
            return build_window_graphs(table, self.window_size, self.window_stride, self.label_threshold)

        return cache.get_or_build(key, build)

    def read(self, path: Path) -> FrameTable:
        """The whole capture, labelled; the last capture read is kept, so the parts of one capture,
        built one after another, read it once."""
        stat = Path(path).stat()
        return _read_labelled(Path(path).resolve(), stat.st_size, stat.st_mtime_ns, self.capture_format, self.layout, self.formats,
                              self.on_bad_rows, self.labels)

    def write(self, writer, path: Path, start: float = 0.0, stop: float = 1.0) -> None:
        """The graphs of a capture slice, built chunk by chunk into a ``GraphWriter``."""
        chunks = (node_keys(chunk, self.graph_node) for chunk in self.frames(path, start, stop))
        for part in build_window_graphs_chunked(chunks, self.window_size, self.window_stride, self.label_threshold):
            writer.append(part)

    def frames(self, path: Path, start: float = 0.0, stop: float = 1.0) -> Iterator[FrameTable]:
        """The frames of ``time_slice(read(path), start, stop)``, chunk by chunk: a first
        streaming pass counts the frames when the slice is not the whole capture."""
        if self.labels:  # intervals label the capture as a whole (as a sidecar does): read it whole
            yield time_slice(self.read(path), start, stop)
            return
        capture_format = self.capture_format_of(path)
        if (start, stop) == (0.0, 1.0):
            yield from capture_chunks(path, capture_format, self.on_bad_rows)
            return
        index = frame_index(path, capture_format, self.on_bad_rows)
        lo, hi = slice_bounds(sum(block.frames for block in index), start, stop)
        remaining = hi - lo
        chunks = capture_chunks(path, capture_format, self.on_bad_rows, start_frame=lo, index=index)
        try:
            for chunk in chunks:
                if remaining <= 0:
                    break
                chunk = chunk.take(slice(0, remaining)) if len(chunk) > remaining else chunk
                remaining -= len(chunk)
                yield chunk
        finally:
            chunks.close()


def _format_of(path: Path, capture_format: str | None, layout: Layout | None, formats: Formats | None) -> CaptureFormat:
    return LayoutFormat(layout) if layout is not None else resolve_format(path, capture_format, formats)


@functools.lru_cache(maxsize=1)
def _read_labelled(path: Path, _size: int, _mtime_ns: int, capture_format: str | None, layout: Layout | None,
                   formats: Formats | None, on_bad_rows: str, labels: tuple[Interval, ...]) -> FrameTable:
    table = read_capture(path, _format_of(path, capture_format, layout, formats), on_bad_rows)
    return apply_intervals(table, list(labels), path)


def time_slice(table: FrameTable, start: float, stop: float) -> FrameTable:
    """Frames from fraction ``start`` to ``stop`` of the table, in order."""
    return table.take(slice(*slice_bounds(len(table), start, stop)))


def slice_bounds(num_frames: int, start: float, stop: float) -> tuple[int, int]:
    """First and end row of the frames from fraction ``start`` to ``stop`` of ``num_frames``."""
    return int(round(start * num_frames)), int(round(stop * num_frames))


class CttDataset(CaptureDataset):
    """A standard dataset held in the can-train-and-test layout under ``--data-root``."""

    def load_splits(self) -> Splits:
        root = self.data_root()
        if ctt_folders(root) is None:
            raise KdcoreError(f"{root}: dataset {self.name!r} expects the can-train-and-test layout (train_*/ and test_*/ folders of CSV files)")
        return super().load_splits()


def ctt_dataset(name: str, description: str) -> type[CttDataset]:
    return type(f"Ctt_{name}", (CttDataset,), {"name": name, "__doc__": f"{description}, in the can-train-and-test layout; needs --data-root."})


STANDARD_DATASETS = [
    ctt_dataset("hcrl_ch", "HCRL Car-Hacking (DoS, fuzzing, gear and RPM spoofing)"),
    ctt_dataset("hcrl_sa", "HCRL Survival Analysis (flooding, fuzzing, malfunction)"),
    *(ctt_dataset(f"set_0{i}", f"can-train-and-test set {i}") for i in range(1, 5)),
]
