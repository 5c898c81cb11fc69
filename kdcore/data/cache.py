"""On-disk cache of built window graphs, keyed by the capture's content and the build parameters.

A second run over the same capture reads the cache instead of parsing and building again. An entry
is either ``{key}.npz`` (graphs built in memory) or a folder ``{key}/`` of ``.npy`` files (graphs
streamed from a big capture, loaded memory-mapped); both hold the same graphs for the same key.
Two processes building the same entry at once each write a temporary file or folder and rename it
into place, so readers only ever see a whole entry.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from kdcore.data.graphs import GraphWriter, WindowGraphs

BUILDER_VERSION = 4  # bump when graph construction changes (2: timing features absent without timestamps; 3: node_attack; 4: attack_start)


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's content, hashed once per version of the file in a process (a capture cut
    into several parts keys each part by it)."""
    path = Path(path).resolve()
    stat = path.stat()
    return _digest(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: Path, _size: int, _mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def cache_key(path: str | Path, **parameters: Any) -> str:
    """Content hash of the capture plus every parameter that changes the graphs."""
    identity = {"content": file_digest(path), "builder": BUILDER_VERSION, **parameters}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


class GraphCache:
    """``WindowGraphs`` by key in a folder; ``cache_dir=None`` disables caching."""

    def __init__(self, cache_dir: str | Path | None):
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.hits = 0
        self.misses = 0

    def get_or_build(self, key: str, build: Callable[[], WindowGraphs]) -> WindowGraphs:
        """The entry in memory, or ``build()`` saved as ``{key}.npz``."""
        if self.cache_dir is None:
            return build()
        found = self.load(key, mapped=False)
        if found is not None:
            return found
        self.misses += 1
        graphs = build()
        graphs.save(self.cache_dir / f"{key}.npz")
        return graphs

    def get_or_write(self, key: str, num_features: int, write: Callable[[GraphWriter], None]) -> WindowGraphs:
        """The entry memory-mapped, or written part by part by ``write(writer)`` into ``{key}/``.

        Without a cache folder the graphs go to a temporary folder that is removed once mapped
        (the mapping outlives the files on POSIX systems).
        """
        if self.cache_dir is None:
            scratch = Path(tempfile.mkdtemp(prefix="kdcore-graphs-"))
            try:
                _write_folder(scratch / "graphs", num_features, write)
                graphs = WindowGraphs.load_folder(scratch / "graphs")
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            return attrs.evolve(graphs, folder=None)  # the folder is gone: pickles by value
        found = self.load(key, mapped=True)
        if found is not None:
            return found
        self.misses += 1
        folder = self.cache_dir / key
        _write_folder(folder, num_features, write)
        return WindowGraphs.load_folder(folder)

    def load(self, key: str, mapped: bool) -> WindowGraphs | None:
        """The entry if there is one (counted as a hit); a folder entry is mapped if ``mapped``."""
        if self.cache_dir is None:
            return None
        folder, archive = self.cache_dir / key, self.cache_dir / f"{key}.npz"
        if folder.is_dir():
            self.hits += 1
            return WindowGraphs.load_folder(folder, mapped=mapped)
        if archive.is_file():
            self.hits += 1
            return WindowGraphs.load(archive)
        return None


def _write_folder(folder: Path, num_features: int, write: Callable[[GraphWriter], None]) -> None:
    """Write into a temporary sibling, then rename it into place; if another process got there
    first, keep its entry (the same graphs) and drop ours."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        os.chmod(staging, 0o777 & ~_umask())  # what mkdir would have given, not mkdtemp's 0700
        writer = GraphWriter(staging, num_features)
        try:
            write(writer)
        except BaseException:
            writer.abort()
            raise
        writer.close()
        try:
            os.rename(staging, folder)
        except OSError:
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
