"""What a capture format is: a name, a sniffer and a reader producing ``FrameTable``s, whole or
chunk by chunk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import attrs

from kdcore.data.formats import text
from kdcore.data.formats.text import Lines, read_head, text_blocks
from kdcore.data.frames import FrameTable, RowErrors

CHUNK_FRAMES = 1 << 20  # frames per chunk of a capture that is read whole


@attrs.frozen
class Block:
    """Where a chunk of a capture starts, how many frames it holds, and what reading on from
    there needs (``capture_chunks(..., start_frame=...)`` resumes at a block)."""

    offset: int  # the byte where its first line starts
    line: int  # that line's number
    frames: int
    before: int = 0  # frames before it: the position of its first frame
    clock: float = 0.0  # the running time at its start, in captures that log time differences


class CaptureFormat:
    """One on-disk layout of CAN frames.

    ``sniff`` looks at the first bytes of a file and says whether this format can read it;
    ``read`` parses the whole file, reporting malformed rows through ``RowErrors``;
    ``read_chunks`` hands the frames out in bounded chunks (by default: read whole, then sliced).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    # Detection tries higher priorities first: a binary magic or a distinctive header outranks a
    # sniffer that goes by the shape of rows (built-ins: 10-90).
    priority: ClassVar[int] = 50
    suffixes: ClassVar[tuple[str, ...]] = ()
    carries_labels: ClassVar[bool] = False  # True: labels come from the file, never from a sidecar
    streams: ClassVar[bool] = False  # True: read_chunks reads the file block by block, in bounded memory

    def sniff(self, head: bytes, path: Path) -> bool:
        raise NotImplementedError

    def read(self, path: Path, errors: RowErrors) -> FrameTable:
        raise NotImplementedError

    def read_chunks(
        self, path: Path, errors: RowErrors, chunk_bytes: int | None = None, start: Block | None = None
    ) -> Iterator[tuple[Block, FrameTable]]:
        """The frames from block ``start`` on (``None``: the beginning), as (where, frames) pairs;
        concatenated, the tables are ``read``'s. ``chunk_bytes``: the text read at a time (by
        default ``text.CHUNK_BYTES``). Here the capture is read whole and sliced."""
        table = self.read(path, errors)
        for before in range(start.before if start else 0, len(table), CHUNK_FRAMES):
            part = table.take(slice(before, before + CHUNK_FRAMES))
            yield Block(0, 1, len(part), before), part


class TextFormat(CaptureFormat):
    """A line-oriented text capture, read block by block by the text engine
    (``kdcore.data.formats.text``): ``settings`` reads what the format needs from the file's
    head (a header, a time mode), ``parse`` turns one block of lines into frames."""

    streams = True

    def settings(self, path: Path, head: bytes) -> Any:
        return None

    def parse(self, lines: Lines, settings: Any, errors: RowErrors) -> FrameTable:
        raise NotImplementedError

    def time_differences(self, settings: Any) -> bool:
        """Whether ``parse``'s timestamps are the time since the previous frame (summed up here)."""
        return False

    def read(self, path: Path, errors: RowErrors) -> FrameTable:
        tables = [table for _, table in self.read_chunks(path, errors)]
        table = tables[0] if len(tables) == 1 else FrameTable.concat(tables)
        return attrs.evolve(table, bad_rows=errors.skipped)

    def read_chunks(
        self, path: Path, errors: RowErrors, chunk_bytes: int | None = None, start: Block | None = None
    ) -> Iterator[tuple[Block, FrameTable]]:
        settings = self.settings(path, read_head(path))
        differences = self.time_differences(settings)
        start = start or Block(0, 1, 0)
        before, clock = start.before, start.clock
        for lines in text_blocks(path, errors, chunk_bytes or text.CHUNK_BYTES, start.offset, start.line):
            table = self.parse(lines, settings, errors)
            block = Block(lines.offset, lines.line, len(table), before, clock)
            if not table.timestamps:  # positions in the capture, not in the block
                table = attrs.evolve(table, timestamp=table.timestamp + before)
            elif differences and len(table):
                table = attrs.evolve(table, timestamp=clock + table.timestamp.cumsum())
                clock = float(table.timestamp[-1])
            before += len(table)
            yield block, table
