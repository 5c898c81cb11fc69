"""Reading a capture as a sequence of bounded chunks, for captures too big to hold in memory.

``capture_chunks`` yields the frames of a capture as consecutive ``FrameTable``s; concatenated,
they are exactly ``read_capture``'s table, and a bad row is reported with the same ``file:line``.

A format that streams (``CaptureFormat.streams``: the text formats, layouts included) reads the
file ``chunk_bytes`` at a time with the text engine (``CaptureFormat.read_chunks``), each block
cut after its last line and parsed by the format's own parser, the one ``read_capture`` runs.
Every other format, and any capture with an attack sidecar (its labels are applied over the whole
capture), is read whole and then handed out in slices of ``CHUNK_FRAMES``: what is built from it
stays bounded, the table does not.

``frame_index`` counts the frames of each block in one streaming pass (cached per file version in
the process), so a split that starts late in a capture (``start_frame``) seeks to the block that
holds its first frame instead of parsing everything before it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import attrs

from kdcore.data.formats import read_capture, resolve_format
from kdcore.data.formats.base import CHUNK_FRAMES, Block, CaptureFormat  # noqa: F401 — Block and CHUNK_FRAMES are part of this module's API
from kdcore.data.formats.labels import sidecar_path
from kdcore.data.formats.text import CHUNK_BYTES
from kdcore.data.frames import FrameTable, RowErrors


def streams(path: str | Path, format: str | CaptureFormat | None = None) -> bool:
    """Whether ``capture_chunks`` reads this capture block by block (rather than whole, then sliced)."""
    path = Path(path)
    return resolve_format(path, format).streams and not sidecar_path(path).is_file()


def capture_chunks(
    path: str | Path,
    format: str | CaptureFormat | None = None,
    on_bad_rows: str = "error",
    *,
    start_frame: int = 0,
    index: tuple[Block, ...] | None = None,
    chunk_bytes: int | None = None,
) -> Iterator[FrameTable]:
    """The frames of one capture from ``start_frame`` on, as consecutive tables of bounded size.

    ``index`` (``frame_index`` of the same capture and settings) lets a late ``start_frame`` skip
    the blocks before it unread. Each chunk's ``bad_rows`` counts the rows skipped in it.
    """
    path = Path(path)
    errors = RowErrors(path, on_bad_rows)
    capture_format = resolve_format(path, format)
    if not streams(path, capture_format):
        table = read_capture(path, capture_format, on_bad_rows)
        for start in range(start_frame, len(table), CHUNK_FRAMES):  # (none at all for an empty table)
            yield table.take(slice(start, start + CHUNK_FRAMES))
        return
    start, to_skip = _seek(index, start_frame) if index and start_frame else (None, start_frame)
    skipped = errors.skipped
    for _, table in capture_format.read_chunks(path, errors, chunk_bytes or CHUNK_BYTES, start):
        table, skipped = attrs.evolve(table, bad_rows=errors.skipped - skipped), errors.skipped
        if to_skip:
            dropped = min(to_skip, len(table))
            to_skip -= dropped
            table = table.take(slice(dropped, None))
        yield table


def frame_index(
    path: str | Path, format: str | CaptureFormat | None = None, on_bad_rows: str = "error", chunk_bytes: int | None = None
) -> tuple[Block, ...]:
    """Where every block of a capture starts and its frames, counted in one streaming pass
    (cached per file version); the frames add up to ``len(read_capture(path, format, on_bad_rows))``."""
    path = Path(path).resolve()
    stat = path.stat()
    return _frame_index(path, stat.st_size, stat.st_mtime_ns, format, on_bad_rows, chunk_bytes or CHUNK_BYTES)


@functools.lru_cache(maxsize=256)
def _frame_index(path: Path, _size: int, _mtime_ns: int, format, on_bad_rows: str, chunk_bytes: int) -> tuple[Block, ...]:
    capture_format = resolve_format(path, format)
    if not streams(path, capture_format):
        return (Block(0, 1, len(read_capture(path, capture_format, on_bad_rows))),)
    return tuple(block for block, _ in capture_format.read_chunks(path, RowErrors(path, on_bad_rows), chunk_bytes))


def _seek(index: tuple[Block, ...], start_frame: int) -> tuple[Block, int]:
    """The block that holds frame ``start_frame``, and the frames of it to skip."""
    for block in index[:-1]:
        if block.before + block.frames > start_frame:
            return block, start_frame - block.before
    return index[-1], start_frame - index[-1].before
