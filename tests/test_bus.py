"""A detector on a bus that misbehaves: odd frames, an interface that goes and comes back, SIGTERM."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import can
import numpy as np
import pytest

from kdcore.bus import BusEvents, ResilientBus, bus_chunks, well_formed
from kdcore.data.formats.writers import write_csv

from conftest import tiny_capture

GAT = "automotive/tiny/supervised/gat/teacher/no-kd/normal/models/gat_normal.pth"


def data_frame(i: int) -> can.Message:
    return can.Message(timestamp=i * 0.001, arbitration_id=0x100 + i % 4, data=bytes([i % 256] * 8), is_extended_id=False)


def test_error_remote_and_malformed_frames_are_counted_and_logged_once(caplog):
    good = [data_frame(i) for i in range(10)]
    odd = [
        can.Message(timestamp=1.0, is_error_frame=True),
        can.Message(timestamp=1.1, arbitration_id=0x123, is_remote_frame=True, dlc=8),
        can.Message(timestamp=1.2, arbitration_id=0x800, data=b"\x01", is_extended_id=False, check=False),  # 12-bit ID in an 11-bit frame
        can.Message(timestamp=1.3, arbitration_id=0x124, dlc=8, data=b"\x01\x02", check=False),  # fewer bytes than its DLC
        can.Message(timestamp=1.4, is_error_frame=True),
    ]
    messages = iter(good[:5] + odd + good[5:])
    bus = type("ScriptedBus", (), {"recv": lambda self, timeout=None: next(messages, None)})()
    events = BusEvents()
    with caplog.at_level(logging.WARNING, logger="kdcore.bus"):
        chunks = list(bus_chunks(bus, window=5, timeout=0.01, idle_limit=0.01, events=events))
    assert [len(frames) for frames, _ in chunks] == [5, 5]
    assert chunks[1][0].can_id.tolist() == [m.arbitration_id for m in good[5:]]  # the frames after the odd ones, in order
    assert (events.error_frames, events.remote_frames, events.malformed_frames) == (2, 1, 2)
    assert len(caplog.records) == 3 and all("counted in the summary" in r.getMessage() for r in caplog.records)
    assert not well_formed(odd[2]) and not well_formed(odd[3]) and well_formed(good[0])


class FlakyInterface:
    """A bus that delivers ``frames``, fails after ``fail_after`` of them, and cannot be reopened
    for the first ``closed_for`` tries: an adapter pulled out and plugged back in."""

    def __init__(self, frames, state):
        self.frames, self.state = frames, state

    def recv(self, timeout=None):
        if self.state["delivered"] == self.state["fail_after"] and not self.state["failed"]:
            self.state["failed"] = True
            raise can.CanOperationError("Network is down")
        if self.state["delivered"] >= len(self.frames):
            return None
        self.state["delivered"] += 1
        return self.frames[self.state["delivered"] - 1]

    def shutdown(self):
        self.state["shutdowns"] += 1


def test_a_bus_that_goes_away_is_reopened_with_backoff_and_no_frame_after_it_is_lost(caplog):
    frames = [data_frame(i) for i in range(20)]
    state = {"delivered": 0, "fail_after": 7, "failed": False, "opens": 0, "refusals": 2, "shutdowns": 0}

    def open_interface():
        state["opens"] += 1
        if state["failed"] and state["refusals"]:
            state["refusals"] -= 1
            raise can.CanInitializationError("No such device")
        return FlakyInterface(frames, state)

    events = BusEvents()
    bus = ResilientBus(open_interface, events, wait=(0.01, 0.02))
    with caplog.at_level(logging.WARNING, logger="kdcore.bus"):
        chunks = list(bus_chunks(bus, window=5, timeout=0.01, idle_limit=0.5, events=events))
    received = np.concatenate([frames.can_id for frames, _ in chunks])
    assert received.tolist() == [m.arbitration_id for m in frames]  # every frame, none lost or repeated
    assert (events.outages, events.reconnects, state["opens"]) == (1, 1, 4)  # the first open, two refused, one back
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and messages[0].startswith("CAN bus lost (CanOperationError: Network is down)")
    assert messages[1].startswith("CAN bus back after")


def test_sigterm_mid_run_leaves_a_complete_alert_file(teacher_root, tmp_path):
    """A detector service stopped by SIGTERM while an attack is under way: every line is JSON, and
    the incident open at that moment is closed in the file."""
    capture = tmp_path / "long-dos.csv"
    write_csv(tiny_capture(np.random.default_rng(5), 40_000, "dos"), capture)  # ~20 s at recorded speed
    alerts = tmp_path / "alerts.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "kdcore", "detect", "--model", str(teacher_root / GAT), "--bus", "virtual:kdcore-sigterm",
         "--feed", str(capture), "--alerts", str(alerts)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 60
    while not (alerts.is_file() and alerts.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    events = [json.loads(line) for line in alerts.read_text().splitlines()]  # every line parses
    opened = [e["incident"] for e in events if e["event_type"] == "incident_open"]
    closed = [e["incident"] for e in events if e["event_type"] == "incident_close"]
    assert opened and opened == closed, "every incident opened is closed"
    summary = json.loads(stderr.strip().splitlines()[-1])["summary"]
    assert summary["incidents"] == len(opened) and summary["frames"] < 40_000 and "bus" in summary


def test_a_wrapped_python_can_bus_delivers_its_frames_and_a_wrong_one_fails_at_once():
    from kdcore.bus import open_bus
    from kdcore.errors import KdcoreError

    sender = can.Bus(interface="virtual", channel="kdcore-resilient")
    bus = ResilientBus(lambda: open_bus("virtual:kdcore-resilient"), BusEvents())
    sender.send(data_frame(1))
    message = bus.recv(1.0)
    bus.shutdown()
    sender.shutdown()
    assert message is not None and message.arbitration_id == 0x101 and bus.bus is None
    with pytest.raises(KdcoreError, match="cannot open CAN bus 'nosuch:x'"):
        ResilientBus(lambda: open_bus("nosuch:x"), BusEvents())  # a setup error, not an outage to wait out
