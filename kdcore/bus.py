"""Frames from a live python-can bus for ``kdcore detect``, through whatever the bus does.

A detector is a service that runs for days on a bus that misbehaves. ``ResilientBus`` reopens a
bus that fails (an unplugged adapter, a socketcan interface taken down) with exponential backoff,
logging once when it goes and once when it comes back. ``bus_chunks`` scores only well-formed data
frames: error frames, remote frames and malformed frames (an ID or DLC out of range, fewer data
bytes than the DLC) are counted in ``BusEvents`` and the first of each kind is logged, never
raised. ``feed_bus`` sends a capture onto a bus, for the live demo and tests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import numpy as np

from kdcore.data.frames import FrameTable
from kdcore.errors import KdcoreError

log = logging.getLogger(__name__)

RECONNECT_WAIT = (0.1, 5.0)  # seconds: the first wait before reopening a failed bus, and the longest (it doubles)
FEED_TICK = 0.002  # seconds: how often a recorded-speed feed wakes up at most
Chunk = tuple[FrameTable, float]  # frames, and the perf_counter time the last of them arrived


def open_bus(spec: str, **options):
    """A python-can bus from ``INTERFACE[:CHANNEL]``; a one-line error when it cannot be opened."""
    import can

    interface, _, channel = spec.partition(":")
    try:
        return can.Bus(interface=interface, channel=channel or None, **options)
    except (can.CanError, ValueError, ImportError, OSError, TypeError) as error:
        raise KdcoreError(f"cannot open CAN bus {spec!r}: {error}") from None


@attrs.define
class BusEvents:
    """What a bus did besides delivering frames."""

    error_frames: int = 0
    remote_frames: int = 0
    malformed_frames: int = 0
    outages: int = 0
    reconnects: int = 0

    def count(self, kind: str, detail: str) -> None:
        """One more of ``kind``; the first is logged, the rest only counted (the summary has them)."""
        seen = getattr(self, kind)
        setattr(self, kind, seen + 1)
        if not seen:
            log.warning("%s on the bus (first: %s); skipped, and counted in the summary", kind.replace("_", " "), detail)

    def as_dict(self) -> dict[str, int]:
        return attrs.asdict(self)


class ResilientBus:
    """A python-can bus that reopens itself when it fails, waiting ``RECONNECT_WAIT[0]`` seconds,
    then twice as long each try, up to ``RECONNECT_WAIT[1]``. ``recv`` never raises for a failing
    bus: it returns None, as a quiet bus does."""

    def __init__(self, opener: Callable[[], Any], events: BusEvents, wait: tuple[float, float] = RECONNECT_WAIT):
        self._open, self.events, self._wait_range = opener, events, wait
        self.bus = opener()  # the first open fails loudly: a wrong channel is a setup error, not an outage
        self._wait, self._down_since = wait[0], 0.0

    def recv(self, timeout: float | None = None):
        import can

        if self.bus is None and not self._reopen():
            return None
        try:
            return self.bus.recv(timeout)
        except (can.CanError, OSError) as error:
            self._lost(error)
            return None

    def send(self, message) -> None:
        self.bus.send(message)

    def shutdown(self) -> None:
        if self.bus is not None:
            self.bus.shutdown()
            self.bus = None

    def _lost(self, error: Exception) -> None:
        self.events.outages += 1
        log.warning("CAN bus lost (%s: %s); reconnecting", type(error).__name__, str(error).partition("\n")[0])
        try:
            self.bus.shutdown()
        except Exception:  # a bus that just failed may fail to close too; it is gone either way
            pass
        self.bus, self._down_since, self._wait = None, time.monotonic(), self._wait_range[0]

    def _reopen(self) -> bool:
        import can

        try:
            self.bus = self._open()
        except (KdcoreError, can.CanError, OSError):
            time.sleep(self._wait)
            self._wait = min(2 * self._wait, self._wait_range[1])
            return False
        self.events.reconnects += 1
        log.warning("CAN bus back after %.1f s", time.monotonic() - self._down_since)
        return True


def well_formed(message) -> bool:
    """An ID within its format's range, a DLC of 0-64, and as many data bytes as the DLC says (up to 8)."""
    largest = 0x1FFFFFFF if message.is_extended_id else 0x7FF
    data = message.data if message.data is not None else b""
    return 0 <= message.arbitration_id <= largest and 0 <= message.dlc <= 64 and len(data) >= min(message.dlc, 8)


def bus_chunks(bus, window: int, timeout: float = 1.0, idle_limit: float | None = None,
               ended: threading.Event | None = None, events: BusEvents | None = None) -> Iterator[Chunk]:
    """Well-formed data frames from a python-can bus, one window's worth at a time as they arrive.
    Stops after ``idle_limit`` seconds without a frame (None: never), or at the first wait for a
    frame once ``ended`` is set (a feed that has sent its last frame)."""
    events = events if events is not None else BusEvents()
    rows: list[tuple] = []
    idle = 0.0
    while True:
        message = bus.recv(timeout)
        if message is None:
            if ended is not None and ended.is_set():
                break
            idle += timeout
            if idle_limit is not None and idle >= idle_limit:
                break
            continue
        idle = 0.0
        if message.is_error_frame:
            events.count("error_frames", f"at {message.timestamp:.6f}")
            continue
        if message.is_remote_frame:
            events.count("remote_frames", f"ID {message.arbitration_id:03X} at {message.timestamp:.6f}")
            continue
        if not well_formed(message):
            events.count("malformed_frames", f"ID {message.arbitration_id:X}, DLC {message.dlc}, "
                                             f"{len(message.data or b'')} data bytes at {message.timestamp:.6f}")
            continue
        data = bytes(message.data[:8]).ljust(8, b"\0")
        rows.append((message.timestamp, message.arbitration_id, min(message.dlc, 8), data))
        if len(rows) == window:
            yield _table(rows), time.perf_counter()
            rows = []
    if rows:
        yield _table(rows), time.perf_counter()


def feed_bus(bus, table: FrameTable, real_time: bool, stop: threading.Event) -> None:
    """Send a capture's frames onto ``bus`` in time order, each at its recorded time after the first
    (or as fast as possible), until done or ``stop`` is set. The frames keep their recorded
    timestamps where the bus preserves them (python-can's ``virtual``: ``preserve_timestamps``)."""
    import can

    real_time = real_time and table.timestamps  # positions are no clock: as fast as possible
    table = table.take(np.argsort(table.timestamp, kind="stable"))
    start_wall = time.perf_counter()
    start_time = table.timestamp[0] if len(table) else 0.0
    for timestamp, can_id, dlc, payload in zip(table.timestamp.tolist(), table.can_id.tolist(), table.dlc.tolist(), table.payload):
        if real_time:
            wait = start_wall + (timestamp - start_time) - time.perf_counter()
            # Waking at most every FEED_TICK (frames due meanwhile go together) leaves the detector
            # the interpreter for longer stretches: a wake-up per frame slows its decisions.
            if wait > 0 and stop.wait(max(wait, FEED_TICK)):
                return
        elif stop.is_set():
            return
        bus.send(can.Message(timestamp=timestamp, arbitration_id=can_id, is_extended_id=can_id > 0x7FF,
                             dlc=dlc, data=bytes(payload[:dlc])))


def _table(rows: list[tuple]) -> FrameTable:
    timestamp, can_id, dlc, data = zip(*rows)
    payload = np.frombuffer(b"".join(data), dtype=np.uint8).reshape(-1, 8)
    return FrameTable.from_frames(np.array(timestamp), np.array(can_id), np.array(dlc), payload)
