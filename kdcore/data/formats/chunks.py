"""Reading a capture as a sequence of bounded chunks, for captures too big to hold in memory.

``capture_chunks`` yields the frames of a capture as consecutive ``FrameTable``s; concatenated,
they are exactly ``read_capture``'s table, and a bad row is reported with the same ``file:line``.

The text formats big datasets come in stream: ``ctt`` (the six standard datasets), ``candump``
and the two Car-Hacking layouts. The file is read ``chunk_bytes`` at a time, each block cut after
its last newline, split into lines numbered on from the previous block, and parsed by the
format's own per-chunk parser, the one ``read_capture`` runs. Every other format, and any capture
with an attack sidecar (its labels are applied over the whole capture), is read whole and then
handed out in slices of ``CHUNK_FRAMES``: what is built from it stays bounded, the table does not.

``frame_index`` counts the frames of each block in one streaming pass (cached per file version in
the process), so a split that starts late in a capture (``start_frame``) seeks to the block that
holds its first frame instead of parsing everything before it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs

from kdcore.data.formats import ctt, read_capture, resolve_format
from kdcore.data.formats.base import CaptureFormat
from kdcore.data.formats.candump import Candump
from kdcore.data.formats.car_hacking import CarHackingCsv, CarHackingText, attack_name
from kdcore.data.formats.labels import sidecar_path
from kdcore.data.formats.textscan import Lines, read_chunks, split_lines
from kdcore.data.frames import BadRowError, FrameTable, RowErrors
from kdcore.errors import KdcoreError

CHUNK_BYTES = 32 << 20  # text per block: ~0.9 M ctt frames, ~0.6 M candump frames
CHUNK_FRAMES = 1 << 20  # frames per chunk of a capture that is read whole

BlockReader = Callable[[Lines, bool], FrameTable]  # (lines of a block, is it the file's first block) → frames


@attrs.frozen
class Block:
    """Where a block of whole lines starts in the file, and how many frames it holds."""

    offset: int
    line: int
    frames: int


def streams(path: str | Path, format: str | None = None) -> bool:
    """Whether ``capture_chunks`` reads this capture block by block (rather than whole, then sliced)."""
    path = Path(path)
    return _block_reader(resolve_format(path, format), path, RowErrors(path)) is not None


def capture_chunks(
    path: str | Path,
    format: str | None = None,
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
    reader = _block_reader(resolve_format(path, format), path, errors)
    if reader is None:
        table = read_capture(path, format, on_bad_rows)
        for start in range(start_frame, len(table), CHUNK_FRAMES):  # (none at all for an empty table)
            yield table.take(slice(start, start + CHUNK_FRAMES))
        return
    offset, line, to_skip = 0, 1, start_frame
    if index and start_frame:
        offset, line, to_skip = _seek(index, start_frame)
    for _, _, lines, first in _blocks(path, reader, chunk_bytes or CHUNK_BYTES, offset, line):
        skipped_before = errors.skipped
        table = reader(lines, first)
        table = attrs.evolve(table, bad_rows=errors.skipped - skipped_before)
        if to_skip:
            dropped = min(to_skip, len(table))
            to_skip -= dropped
            table = table.take(slice(dropped, None))
        yield table


def frame_index(path: str | Path, format: str | None = None, on_bad_rows: str = "error", chunk_bytes: int | None = None) -> tuple[Block, ...]:
    """The frames of every block of a capture, counted in one streaming pass (cached per file
    version); the frames add up to ``len(read_capture(path, format, on_bad_rows))``."""
    path = Path(path).resolve()
    stat = path.stat()
    return _frame_index(path, stat.st_size, stat.st_mtime_ns, format, on_bad_rows, chunk_bytes or CHUNK_BYTES)


@functools.lru_cache(maxsize=256)
def _frame_index(path: Path, _size: int, _mtime_ns: int, format: str | None, on_bad_rows: str, chunk_bytes: int) -> tuple[Block, ...]:
    errors = RowErrors(path, on_bad_rows)
    reader = _block_reader(resolve_format(path, format), path, errors)
    if reader is None:
        return (Block(0, 1, len(read_capture(path, format, on_bad_rows))),)
    return tuple(Block(offset, line, len(reader(lines, first))) for offset, line, lines, first in _blocks(path, reader, chunk_bytes))


def _seek(index: tuple[Block, ...], start_frame: int) -> tuple[int, int, int]:
    """(offset, line, frames still to skip) of the block that holds frame ``start_frame``."""
    before = 0
    for block in index[:-1]:
        if before + block.frames > start_frame:
            return block.offset, block.line, start_frame - before
        before += block.frames
    last = index[-1]
    return last.offset, last.line, start_frame - before


def _blocks(path: Path, reader, chunk_bytes: int, offset: int = 0, line: int = 1) -> Iterator[tuple[int, int, Lines, bool]]:
    """(byte offset, first line number, lines, is first block) of consecutive blocks of whole lines.

    A block after the first is split with one newline in front of it, so it looks to the line
    splitter like the middle of a file (no BOM at its start) and its lines keep their numbers.
    """
    split = getattr(reader, "split", split_lines)
    with path.open("rb") as handle:
        handle.seek(offset)
        rest = b""
        first = offset == 0
        while True:
            data = handle.read(chunk_bytes)
            if data:
                text = rest + data
                cut = text.rfind(b"\n") + 1
                if cut == 0:  # a line longer than a block: read on
                    rest = text
                    continue
                text, rest = text[:cut], text[cut:]
            else:
                text, rest = rest, b""
                if not text and not first:
                    return
            del data
            if first:
                lines = split(text)
                shift = line - 1
            else:
                lines = split(b"\n" + text)
                lines = lines.take(slice(1, None))
                shift = line - 2
            lines = Lines(lines.buf, lines.start, lines.end, lines.number + shift)
            yield offset, line, lines, first
            if not rest and not text.endswith(b"\n"):
                return  # the last line had no newline: that was the end
            offset += len(text)
            line += len(lines)
            first = False


def _block_reader(capture_format: CaptureFormat, path: Path, errors: RowErrors) -> BlockReader | None:
    """The format's per-chunk parser for a block of lines, or None when the capture is read whole."""
    if sidecar_path(path).is_file():
        return None  # a sidecar labels frames by time over the whole capture (or is refused): read_capture does it
    if isinstance(capture_format, ctt.CttCsv):
        name = ctt.attack_name(path)

        def read_ctt(lines: Lines, first: bool) -> FrameTable:
            if first:  # line 1 is the header, checked as CttCsv.read checks it
                head = lines.buf[: lines.end[0]].tobytes() if len(lines) else b""
                if not len(lines) or head.lstrip(ctt._BOM_CHARS).strip().lower() != ctt.HEADER.encode():
                    raise BadRowError(f"{path}:1: header: expected {ctt.HEADER!r}")
                lines = lines.take(slice(1, None))
            return read_chunks(lines, lambda chunk: _or_empty(ctt._read_lines(chunk, errors, name)), errors)

        read_ctt.split = lambda text: ctt._split_like_splitlines(split_lines(text))  # a lone CR ends a line too
        return read_ctt
    if isinstance(capture_format, Candump):
        return lambda lines, first: read_chunks(lines, lambda chunk: capture_format._read_lines(chunk, errors), errors)
    if isinstance(capture_format, CarHackingCsv):
        name = attack_name(path)
        return lambda lines, first: read_chunks(lines, lambda chunk: capture_format._read_lines(chunk, errors, name), errors)
    if isinstance(capture_format, CarHackingText):
        return lambda lines, first: read_chunks(lines, lambda chunk: capture_format._read_lines(chunk, errors), errors)
    return None


def _or_empty(table: FrameTable | None) -> FrameTable:
    return FrameTable.empty() if table is None else table
