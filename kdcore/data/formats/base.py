"""What a capture format is: a name, a sniffer and a reader producing a ``FrameTable``."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from kdcore.data.frames import FrameTable, RowErrors


class CaptureFormat:
    """One on-disk layout of CAN frames.

    ``sniff`` looks at the first bytes of a file and says whether this format can read it;
    ``read`` parses the whole file, reporting malformed rows through ``RowErrors``.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    # Detection tries higher priorities first: a binary magic or a distinctive header outranks a
    # sniffer that goes by the shape of rows (built-ins: 10-90).
    priority: ClassVar[int] = 50
    suffixes: ClassVar[tuple[str, ...]] = ()
    carries_labels: ClassVar[bool] = False  # True: labels come from the file, never from a sidecar

    def sniff(self, head: bytes, path: Path) -> bool:
        raise NotImplementedError

    def read(self, path: Path, errors: RowErrors) -> FrameTable:
        raise NotImplementedError


def report_first_bad(valid: np.ndarray, line_numbers: np.ndarray, field: str, values, errors: RowErrors, reason: str) -> np.ndarray:
    """Report every invalid row (raising on the first in ``error`` mode); returns the still-valid mask."""
    for index in np.flatnonzero(~valid):
        shown = values[index]
        shown = shown.decode(errors="replace") if isinstance(shown, bytes) else shown
        errors.bad(int(line_numbers[index]), field, f"{reason}: {shown!r}")
    return valid
