"""One writer per run folder: a second run into the same artifact directory is refused.

The lock is an ``flock`` on ``{run_dir}/.lock``: the operating system drops it when the holder
exits, however it exits (SIGKILL included), so a killed run never leaves a stale lock behind.
``waiting_lock`` is the same kind of lock, waited for: for a short step that runs started at
once must take in turn.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from kdcore.errors import KdcoreError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, runs are not guarded
    fcntl = None


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / ".lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise KdcoreError(f"{run_dir}: another kdcore run ({holder}) is writing here; wait for it or use another experiment root") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def waiting_lock(path: Path) -> Iterator[None]:
    """An flock on ``path``, once its holder has let go."""
    if fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
