"""On-disk cache of built window graphs, keyed by the capture's content and the build parameters.

A second run over the same capture reads the cache instead of parsing and building again. Two
processes building the same entry at once both write a temporary file and rename it into
place, so readers only ever see a whole file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdcore.data.graphs import WindowGraphs

BUILDER_VERSION = 1  # bump when graph construction changes meaning


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
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
        if self.cache_dir is None:
            return build()
        path = self.cache_dir / f"{key}.npz"
        if path.is_file():
            self.hits += 1
            return WindowGraphs.load(path)
        self.misses += 1
        graphs = build()
        graphs.save(path)
        return graphs
