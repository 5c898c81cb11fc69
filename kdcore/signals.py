"""SIGTERM (and, while training, SIGINT) as an exception, so a stopped command unwinds cleanly.

Python's default for SIGTERM ends the process on the spot, and Lightning turns SIGTERM and
Ctrl-C inside ``Trainer.fit`` into a bare exit (status 0 for SIGTERM). Raising ``Stopped``
instead unwinds every ``with`` block on the way out: temporary files of unfinished atomic
writes are removed, the run-folder lock is released, Lightning tears its trainer down, and
``metrics.json`` — the mark of a complete run — is never written. The CLI then exits with the
shell's status for the signal (128 + its number).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Stopped(BaseException):
    """A stop signal arrived; a ``BaseException`` so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise_stopped(signum: int, frame) -> None:
    raise Stopped(signum)


@contextlib.contextmanager
def stop_on(*signums: int) -> Iterator[None]:
    """Raise ``Stopped`` on these signals inside the block (main thread only, where handlers live)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise_stopped) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
