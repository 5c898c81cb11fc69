"""``kdcore detect``: the training graph path applied to replayed or live frames, alerts as JSON lines."""

import io
import json
import threading

import can
import numpy as np
from typer.testing import CliRunner

from kdcore.cli import app
from kdcore.data.formats import read_capture
from kdcore.data.windows import build_window_graphs
from kdcore.detect import Detector, bus_chunks, replay_chunks

GAT = "automotive/tiny/supervised/gat/teacher/no-kd/normal/models/gat_normal.pth"
DOS = "data/tiny/test_01_dos/dos.csv"


def test_replayed_alerts_cover_the_attack_windows(engine, teacher_root):
    detector = Detector(teacher_root / GAT, engine=engine)
    table = read_capture(teacher_root / DOS)
    alerts = io.StringIO()
    summary = detector.detect(replay_chunks(table, detector.window, real_time=False), alerts)

    truth = build_window_graphs(table, detector.window, detector.window)
    assert summary.windows == len(truth) and summary.frames == len(table)
    records = [json.loads(line) for line in alerts.getvalue().splitlines()]
    assert len(records) == summary.alerts > 0
    attack_spans = {tuple(span) for span, label in zip(truth.time_span.tolist(), truth.y) if label}
    alerted = {(r["start"], r["end"]) for r in records}
    assert len(alerted & attack_spans) >= 0.8 * len(attack_spans), "most attack windows raise an alert"
    assert len(alerted - attack_spans) <= 0.2 * len(alerted), "few alerts on normal windows"
    assert all(r["decision"] == "attack" and r["score"] >= r["threshold"] and r["can_ids"] for r in records)


def test_frames_from_a_python_can_bus(engine, teacher_root):
    detector = Detector(teacher_root / GAT, engine=engine)
    table = read_capture(teacher_root / DOS).take(slice(0, 400))
    receiver = can.Bus(interface="virtual", channel="kdcore-test")
    sender = can.Bus(interface="virtual", channel="kdcore-test")

    def send():
        for t, can_id, dlc, payload in zip(table.timestamp, table.can_id, table.dlc, table.payload):
            sender.send(can.Message(timestamp=float(t), arbitration_id=int(can_id), dlc=int(dlc),
                                    data=bytes(payload[:dlc]), is_extended_id=bool(can_id > 0x7FF)))

    thread = threading.Thread(target=send)
    thread.start()
    summary = detector.detect(bus_chunks(receiver, detector.window, timeout=0.1, idle_limit=0.5))
    thread.join()
    receiver.shutdown()
    sender.shutdown()
    assert (summary.frames, summary.windows) == (400, 400 // detector.window)


def test_ctrl_c_ends_with_a_summary(engine, teacher_root):
    detector = Detector(teacher_root / GAT, engine=engine)
    table = read_capture(teacher_root / DOS)

    def interrupted():
        chunks = replay_chunks(table, detector.window, real_time=False)
        yield next(chunks)
        raise KeyboardInterrupt

    summary = detector.detect(interrupted())
    assert summary.windows > 0 and summary.as_dict()["latency_ms_p99"] >= summary.as_dict()["latency_ms_p50"] >= 0


def test_detect_command(teacher_root, tmp_path):
    result = CliRunner().invoke(app, ["detect", "--model", str(teacher_root / GAT), "--replay", str(teacher_root / DOS),
                                      "--as-fast-as-possible", "--alerts", str(tmp_path / "alerts.jsonl")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stderr.strip().splitlines()[-1])["summary"]
    assert summary["alerts"] == len((tmp_path / "alerts.jsonl").read_text().splitlines())
    both = CliRunner().invoke(app, ["detect", "--model", str(teacher_root / GAT)])
    assert both.exit_code == 2 and "exactly one of --bus" in both.stderr
    assert np.isfinite(summary["frames_per_s"])


def test_the_fused_detector_alerts_as_its_evaluation_decided(engine, teacher_root, tmp_path):
    import shutil

    from conftest import tiny_config

    root = tmp_path / "root"
    shutil.copytree(teacher_root, root)
    fusion = engine.run(tiny_config(root, mode="fusion", model_size="teacher"))
    detector = Detector(fusion.checkpoint, engine=engine)
    table = read_capture(root / DOS)
    summary = detector.detect(replay_chunks(table, detector.window, real_time=False))
    (tn, fp), (fn, tp) = fusion.metrics["test_sets"]["test_01_dos"]["confusion_matrix"]
    assert summary.alerts == tp + fp and summary.windows == tn + fp + fn + tp
