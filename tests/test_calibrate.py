"""``kdcore calibrate``: a trained detector fitted to another vehicle from its clean traffic alone."""

from __future__ import annotations

import json
import logging

import attrs
import numpy as np
import pytest
import torch
from torch_geometric.loader import DataLoader
from typer.testing import CliRunner

from conftest import tiny_capture, tiny_config
from kdcore.calibrate import HEADROOM, MAX_MIN_FRAMES, calibrate, floor_at_the_recordings_level, minimum_frames, recording_threshold
from kdcore.checkpoint import load_checkpoint, save_checkpoint
from kdcore.classes import AttackClasses, error_shares
from kdcore.cli import app
from kdcore.data.formats import read_capture
from kdcore.data.formats.writers import write_csv
from kdcore.data.frames import FrameTable, SharedStamps
from kdcore.data.preprocess import Preprocessing
from kdcore.data.windows import build_window_graphs
from kdcore.detect import Detector
from kdcore.errors import KdcoreError
from kdcore.evaluate import evaluate
from kdcore.metrics import ScoreSpread, log_odds, robust_spread

GAT = "automotive/tiny/supervised/gat/teacher/no-kd/normal/models/gat_normal.pth"
VGAE = "automotive/tiny/unsupervised/vgae/teacher/no-kd/autoencoder/models/vgae_autoencoder.pth"
OTHER_IDS = 0x400  # the other vehicle's IDs: the tiny vehicle's, moved up, so none is in the vocabulary


def other_vehicle(rng, frames: int, attack: str | None = None):
    table = tiny_capture(rng, frames, attack)
    return attrs.evolve(table, can_id=np.where(table.label == 1, table.can_id, table.can_id + OTHER_IDS).astype(np.uint32))


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """A clean recording of another vehicle, a second one, an attacked one, and one too short."""
    root = tmp_path_factory.mktemp("other-vehicle")
    rng = np.random.default_rng(11)
    write_csv(other_vehicle(rng, 2000), root / "clean.csv")
    write_csv(other_vehicle(rng, 2000), root / "clean-2.csv")
    write_csv(other_vehicle(rng, 2000, "dos"), root / "test_01_dos" / "dos.csv")
    write_csv(other_vehicle(rng, 900), root / "short.csv")
    return root


def calibration_scores(detector: Detector, capture) -> torch.Tensor:
    graphs = build_window_graphs(read_capture(capture), detector.window, detector.window)
    return detector.score(DataLoader(detector.preprocessing.apply(graphs), batch_size=64))


@pytest.fixture(scope="module")
def vocabulary_gat(engine, tmp_path_factory):
    return engine.run(tiny_config(tmp_path_factory.mktemp("vocabulary"), mode="normal", representation="vocabulary")).checkpoint


@pytest.mark.parametrize("model", [GAT, VGAE])
def test_a_calibrated_model_has_the_new_vehicles_threshold(engine, teacher_root, recordings, tmp_path, model):
    out = tmp_path / "calibrated.pth"
    record = calibrate(teacher_root / model, [recordings / "clean.csv"], out, target_fpr=0.05, engine=engine)
    assert record["frames"] == 2000 and record["windows"] == 40 and record["seconds"] > 0
    bus_size = ["bus size in the reconstruction"] if model == VGAE else []
    assert record["fitted"] == ["roles only", *bus_size, "attack-class radius", "threshold", "score spread"]
    assert record["representation"] == "agnostic"

    detector = Detector(out, engine=engine)
    assert load_checkpoint(out).extra["calibration"] == record
    recorded = np.unique(read_capture(recordings / "clean.csv").can_id)
    assert np.array_equal(detector.preprocessing.vehicle_ids, recorded)  # where alerts find a suspect foreign
    assert np.array_equal(detector.judge.vehicle_ids, recorded)
    scores = calibration_scores(detector, recordings / "clean.csv")
    assert detector.threshold == record["threshold"] >= record["threshold_with_headroom"] > record["threshold_on_recording"]
    assert float((scores >= record["threshold_on_recording"]).float().mean()) <= 0.05 + 1 / len(scores)
    trained_spread = ScoreSpread.saved_in(load_checkpoint(teacher_root / model).extra)
    assert detector.spread == ScoreSpread.fit(scores, probabilities=model == GAT) != trained_spread  # the new vehicle's
    margins = torch.from_numpy(detector.spread.margins(scores, detector.threshold))
    assert robust_spread(margins) == pytest.approx(1.0)  # a margin counts the recording's own spreads
    # the headroom: the recording's quantile raised by HEADROOM of the recording's own spreads
    assert record["headroom_spreads"] == HEADROOM > 0
    headroom = detector.spread.margins(np.array([record["threshold_with_headroom"]]), record["threshold_on_recording"])
    assert headroom[0] == pytest.approx(HEADROOM)

    metrics, _ = evaluate(detector, [recordings / "test_01_dos"])  # the calibrated checkpoint evaluates like any
    assert metrics["windows"] == 40 and 0.0 <= metrics["fpr"] <= 1.0
    # its DoS windows go to the class fitted on windows judged by roles, as this vehicle's are (for the
    # VGAE: with its roles error scale, which calibration switched to). The tiny VGAE, two epochs old,
    # flags few of them above its training floor: its windows' classes are judged at the recording's
    # quantile, where its weakest windows come in too (8 of 9 named dos), and its incidents are not.
    if model == VGAE:
        detector.threshold = record["threshold_on_recording"]
        metrics, _ = evaluate(detector, [recordings / "test_01_dos"])
    assert metrics["attack_classes"]["accuracy"] >= 0.8
    assert model == VGAE or metrics["incidents"]["class_accuracy"] == 1.0


def test_a_vgae_reconstructs_the_size_of_a_bigger_bus_and_nothing_else_moves(engine, teacher_root, tmp_path):
    rng = np.random.default_rng(12)
    table = tiny_capture(rng, 3000)
    bigger = attrs.evolve(table, can_id=(0x400 + rng.integers(0, 40, len(table)) * 4).astype(np.uint32))  # 40 IDs, not 12
    write_csv(bigger, tmp_path / "bigger.csv")
    out = tmp_path / "calibrated.pth"
    record = calibrate(teacher_root / VGAE, [tmp_path / "bigger.csv"], out, engine=engine)

    trained, calibrated = load_checkpoint(teacher_root / VGAE), load_checkpoint(out)
    column = Preprocessing.from_dict(trained.extra["data"]["preprocessing"]).roles.index("node_share")
    moved = calibrated.state_dict["feature_head.2.bias"] - trained.state_dict["feature_head.2.bias"]
    assert moved[column] == pytest.approx(record["bus_size_shift"]) and record["bus_size_shift"] > 0.1  # more IDs a window
    assert torch.count_nonzero(moved) == 1
    assert all(torch.equal(tensor, trained.state_dict[name]) for name, tensor in calibrated.state_dict.items()
               if name not in ("feature_head.2.bias", "error_scale"))  # the error scale: the roles one, as always
    data = calibrated.extra["data"]
    graphs = build_window_graphs(read_capture(tmp_path / "bigger.csv"), data["window_size"], data["window_size"])
    batch = next(iter(DataLoader(Preprocessing.from_dict(data["preprocessing"]).apply(graphs), batch_size=len(graphs))))
    with torch.no_grad():
        recon = engine.load_model(calibrated, out)(batch.x, batch.id_token, batch.edge_index, batch.batch)[0]
    assert float((batch.x[:, column] - recon[:, column]).mean()) == pytest.approx(0.0, abs=1e-5)  # on the new bus's level
    # the classes' share floors: here this bus's top nodes carry more than the training bus's, and floors never rise
    classes = AttackClasses.from_dict(calibrated.extra["attack_classes"])
    shares = error_shares(Detector(out, engine=engine).judge.node_scores(batch).numpy(), batch.ptr.numpy())
    assert np.nanmedian(shares) / classes.normal_share > 1.2
    assert classes.share_scale == record["class_share_scale"] == 1.0


def test_a_vocabulary_model_aliases_every_new_id_to_a_trained_one(engine, vocabulary_gat, recordings, tmp_path):
    out = tmp_path / "calibrated.pth"
    record = calibrate(vocabulary_gat, [recordings / "clean.csv"], out, engine=engine)
    assert record["aliased_ids"] == 12 and record["fitted"] == ["CAN-ID aliases", "feature scaling", "attack-class radius", "threshold",
                                                                "score spread"]
    tokens = Detector(out, engine=engine).preprocessing.id_token(np.arange(0x100, 0x100 + 12 * 16, 16) + OTHER_IDS)
    assert (tokens > 0).all()  # every ID of the new vehicle maps to a trained ID, none is "unseen"
    preprocessing = Detector(out, engine=engine).preprocessing
    assert np.array_equal(preprocessing.vehicle_ids, np.unique(read_capture(recordings / "clean.csv").can_id))
    assert np.array_equal(preprocessing.vocabulary, Detector(vocabulary_gat, engine=engine).preprocessing.vehicle_ids)


def test_agnostic_models_calibrate_to_roles_alone_with_a_threshold_never_below_their_floor(engine, tmp_path, recordings):
    result = engine.run(tiny_config(tmp_path, mode="normal", representation="agnostic"))
    trained = load_checkpoint(result.checkpoint).extra
    out = tmp_path / "calibrated.pth"
    record = calibrate(result.checkpoint, [recordings / "clean.csv"], out, engine=engine)
    assert record["fitted"] == ["roles only", "attack-class radius", "threshold", "score spread"]
    assert record["trained"]["roles_threshold"] == trained["roles_threshold"]
    assert record["trained"]["roles_normal_median"] == trained["roles_normal_median"] < trained["roles_threshold"]
    # the GAT's floor: the roles threshold, moved down as far as this car's recording sits below the validation windows
    recording_median = float(calibration_scores(Detector(out, engine=engine), recordings / "clean.csv").double().median())
    drop = max(0.0, float(log_odds(trained["roles_normal_median"]) - log_odds(recording_median)))
    assert float(log_odds(record["floor"])) == pytest.approx(float(log_odds(trained["roles_threshold"])) - drop, abs=1e-6)
    assert record["threshold"] == max(record["threshold_with_headroom"], record["floor"])
    assert len(Detector(out, engine=engine).preprocessing.vocabulary) == 0
    calibrated = load_checkpoint(out).extra  # attack classes of windows judged by roles, as the new vehicle's are
    assert trained["attack_classes"] != trained["roles_attack_classes"]
    # the training DoS floods ID 0, which the vehicle never sends: its alerts' top suspect is foreign
    assert trained["attack_classes"]["foreign_share"][0] > 0.5
    assert trained["roles_attack_classes"] == calibrated["roles_attack_classes"]
    # the roles classes, their radius grown by how much wider this vehicle's windows spread than the validation windows
    classes = AttackClasses.from_dict(calibrated["attack_classes"])
    assert {**calibrated["attack_classes"], "radius_scale": 1.0} == trained["roles_attack_classes"]
    detector = Detector(out, engine=engine)
    graphs = detector.preprocessing.apply(build_window_graphs(read_capture(recordings / "clean.csv"), detector.window, detector.window))
    spread = classes.spread(torch.cat([detector.judge.embed(batch) for batch in DataLoader(graphs, batch_size=64)]).numpy())
    assert classes.radius_scale == record["class_radius_scale"] == pytest.approx(max(1.0, spread / classes.normal_spread))
    assert classes.radius_scale > 1.0  # the other vehicle's windows spread wider than the validation windows
    again = calibrate(out, [recordings / "clean-2.csv"], tmp_path / "again.pth", engine=engine)
    assert again["trained"] == record["trained"]  # calibrating twice keeps the training floor, not the first calibration's
    assert AttackClasses.from_dict(load_checkpoint(tmp_path / "again.pth").extra["attack_classes"]).normal_spread == classes.normal_spread


def test_an_agnostic_vgae_calibrates_to_the_error_scale_of_windows_judged_by_roles(engine, teacher_root, recordings, tmp_path):
    trained = load_checkpoint(teacher_root / VGAE)
    out = tmp_path / "calibrated.pth"
    calibrate(teacher_root / VGAE, [recordings / "clean.csv"], out, engine=engine)
    calibrated = load_checkpoint(out)
    assert torch.equal(calibrated.state_dict["error_scale"], torch.tensor(trained.extra["roles_error_scale"]))
    assert not torch.equal(calibrated.state_dict["error_scale"], trained.state_dict["error_scale"])
    moved = ("error_scale", "feature_head.2.bias")  # and the bus's size (test_a_vgae_reconstructs_the_size_of_a_bigger_bus...)
    assert all(torch.equal(calibrated.state_dict[k], v) for k, v in trained.state_dict.items() if k not in moved), "weights untouched"
    calibrate(out, [recordings / "clean.csv"], tmp_path / "twice.pth", engine=engine)
    assert torch.equal(load_checkpoint(tmp_path / "twice.pth").state_dict["error_scale"], calibrated.state_dict["error_scale"])


def test_a_recording_with_attacks_or_too_few_frames_is_refused(engine, teacher_root, recordings, tmp_path):
    out = tmp_path / "calibrated.pth"
    with pytest.raises(KdcoreError, match=r"dos\.csv: carries \d+ attack-labelled frames; calibrate on attack-free traffic only"):
        calibrate(teacher_root / GAT, [recordings / "test_01_dos"], out, engine=engine)
    with pytest.raises(KdcoreError, match=r"900 frames are too few to calibrate on; record at least 1000 attack-free frames"):
        calibrate(teacher_root / GAT, [recordings / "short.csv"], out, engine=engine)
    with pytest.raises(KdcoreError, match="is the model itself"):
        calibrate(teacher_root / GAT, [recordings / "clean.csv"], teacher_root / GAT, engine=engine)
    assert not out.exists()
    assert minimum_frames(50) == 1000 and minimum_frames(100) == 2000 and minimum_frames(10_000) == MAX_MIN_FRAMES == 5000


def test_a_gats_floor_moves_down_to_a_car_that_scores_lower_and_a_vgaes_stays():
    """Log-odds: the floor keeps its height above the recording's median; an error floor, one
    that would move up, or one trained without a median stays where training put it."""
    lower = torch.sigmoid(torch.full((9,), -6.0))  # this car's windows: a median of -6 log-odds
    gat = ScoreSpread(1.0, log_odds=True)
    moved = floor_at_the_recordings_level(float(torch.sigmoid(torch.tensor(-1.0))), float(torch.sigmoid(torch.tensor(-4.0))), lower, gat)
    assert float(log_odds(moved)) == pytest.approx(-3.0)  # 3 log-odds above the median, as in training
    higher = torch.sigmoid(torch.full((9,), -2.0))
    assert floor_at_the_recordings_level(0.3, float(torch.sigmoid(torch.tensor(-4.0))), higher, gat) == 0.3
    assert floor_at_the_recordings_level(0.3, None, lower, gat) == 0.3
    errors = ScoreSpread(0.1, log_odds=False)
    assert floor_at_the_recordings_level(1.1, 0.9, torch.full((9,), 0.5), errors) == 1.1


def test_a_recording_too_short_to_show_the_target_tail_puts_the_threshold_at_its_highest_window():
    """50 windows (5 000 frames) cannot show a 1 % tail: an interpolated quantile would sit between
    the two highest and flag the highest; the recording's threshold is that window itself."""
    short = torch.linspace(0.0, 1.0, 50)
    assert float(torch.quantile(short.double(), 0.99)) < 1.0 == recording_threshold(short, 0.01)
    long = torch.arange(1, 1001, dtype=torch.float64)  # enough windows: the conformal rank, 991 of 1000
    assert recording_threshold(long, 0.01) == 991.0
    assert float((long >= recording_threshold(long, 0.01)).double().mean()) == 0.01
    assert recording_threshold(torch.arange(1.0, 101.0), 0.05) == 96.0  # ⌈101 · 0.95⌉


def test_several_recordings_calibrate_together_from_the_command_line(teacher_root, recordings, tmp_path):
    out = tmp_path / "calibrated.pth"
    result = CliRunner().invoke(app, ["calibrate", str(teacher_root / GAT), "--normal", str(recordings / "clean.csv"),
                                      "--normal", str(recordings / "clean-2.csv"), "--out", str(out), "--target-fpr", "0.1", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["frames"] == 4000 and record["target_fpr"] == 0.1 and len(record["captures"]) == 2
    plain = CliRunner().invoke(app, ["calibrate", str(teacher_root / GAT), "--normal", str(recordings / "clean.csv"), "--out", str(out)])
    assert plain.exit_code == 0 and f"attack-class radius ×{load_checkpoint(out).extra['calibration']['class_radius_scale']:.2f}" in plain.stdout
    assert f"target FPR 0.01, headroom {HEADROOM:g} score spreads" in plain.stdout
    assert "0 % of frames stamped as the one before" in plain.stdout  # what detect compares its traffic's with
    refused = CliRunner().invoke(app, ["calibrate", str(teacher_root / GAT), "--normal", str(recordings / "short.csv"), "--out", str(out)])
    assert refused.exit_code == 2 and "too few to calibrate on" in refused.output
    exact = CliRunner().invoke(app, ["calibrate", str(teacher_root / GAT), "--normal", str(recordings / "clean.csv"), "--out", str(out),
                                     "--headroom", "0", "--json"])
    record = json.loads(exact.stdout)  # no headroom: the recording's quantile itself
    assert record["headroom_spreads"] == 0 and record["threshold_with_headroom"] == record["threshold_on_recording"]
    negative = CliRunner().invoke(app, ["calibrate", str(teacher_root / GAT), "--normal", str(recordings / "clean.csv"),
                                        "--out", str(tmp_path / "negative.pth"), "--headroom", "-1"])
    assert negative.exit_code == 2 and "--headroom must be 0 or more score spreads, got -1.0" in negative.output
    assert not (tmp_path / "negative.pth").exists()


def test_vocabulary_calibration_aliases_unseen_ids_to_the_training_id_most_alike():
    rng = np.random.default_rng(0)
    trained = Preprocessing.fit(build_window_graphs(tiny_capture(rng, 3000), 50, 50))
    other = build_window_graphs(other_vehicle(rng, 3000), 50, 50)
    calibrated = trained.calibrated(other)
    assert sorted(calibrated.aliases) == [int(i) for i in np.arange(0x100, 0x100 + 12 * 16, 16) + OTHER_IDS]
    assert (calibrated.vocabulary == trained.vocabulary).all()  # the model's tokens stay as trained
    assert calibrated.id_token(np.array([0x100])).tolist() == [1]  # a trained ID keeps its own token
    again = Preprocessing.from_dict(calibrated.to_dict())
    assert again.aliases == calibrated.aliases and again.to_dict() == calibrated.to_dict()


def test_a_calibrated_model_detects_replayed_traffic_and_exports_with_parity(engine, teacher_root, recordings, tmp_path):
    from kdcore.detect import replay_chunks
    from kdcore.export import TOLERANCE, export_checkpoint

    out = tmp_path / "calibrated.pth"
    calibrate(teacher_root / GAT, [recordings / "clean.csv"], out, engine=engine)
    detector = Detector(out, engine=engine)
    attacked = read_capture(recordings / "test_01_dos" / "dos.csv")
    summary = detector.detect(replay_chunks(attacked, detector.window, real_time=False))
    assert summary.windows == len(attacked) // detector.window and summary.alert_windows > 0
    report = export_checkpoint(out, "torchscript", tmp_path / "calibrated.pt", engine=engine)
    assert report.max_abs_diff <= TOLERANCE and report.path.is_file()


def test_shared_stamps_are_counted_across_chunks_and_not_across_captures():
    def table(stamps):
        n = len(stamps)
        return FrameTable.from_frames(np.array(stamps), np.zeros(n), np.zeros(n), np.zeros((n, 8)))

    stamps = SharedStamps().add(table([0.0, 0.0, 0.1])).add(table([0.1, 0.2]))  # the second chunk's first frame shares
    assert (stamps.shared, stamps.pairs) == (2, 4)
    stamps.add(table([0.2, 0.3]), follows=False)  # another capture: its first frame follows none
    assert (stamps.shared, stamps.pairs, stamps.share) == (2, 5, 0.4)
    assert SharedStamps().add(table([0.0, 0.0]).with_positions()).share is None  # no clock, nothing shared


def test_traffic_stamped_as_another_logger_stamps_warns_once(engine, teacher_root, recordings, tmp_path, caplog):
    """Calibration keeps the recording's share of frames stamped as the one before; ``evaluate``
    and ``detect`` warn once where the traffic is stamped otherwise (here, to a 5 ms clock, as a
    logger that stamps in batches), and not on traffic stamped as the recording was."""
    from kdcore.detect import replay_chunks

    out = tmp_path / "calibrated.pth"
    assert calibrate(teacher_root / GAT, [recordings / "clean.csv"], out, engine=engine)["shared_stamps"] < 0.01  # to the µs the CSV keeps
    same_logger = read_capture(recordings / "clean-2.csv")
    batched = attrs.evolve(same_logger, timestamp=np.floor(same_logger.timestamp / 0.005) * 0.005)
    for name in ("one.csv", "two.csv"):
        write_csv(batched, tmp_path / "batched" / name)

    def warnings_of(run) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="kdcore.detect"):
            run(Detector(out, engine=engine))
        return [record.getMessage() for record in caplog.records if "timestamp of the frame before" in record.getMessage()]

    assert warnings_of(lambda detector: evaluate(detector, [recordings / "clean-2.csv"])) == []
    warned = warnings_of(lambda detector: evaluate(detector, [tmp_path / "batched", recordings / "clean-2.csv"]))
    assert len(warned) == 1 and str(tmp_path / "batched" / "one.csv") in warned[0] and "against 0 %" in warned[0]
    metrics, _ = evaluate(Detector(out, engine=engine), [tmp_path / "batched", recordings / "clean-2.csv"])
    shares = {name: test_set["shared_stamps"] for name, test_set in metrics["test_sets"].items()}
    assert shares["one.csv"] == shares["two.csv"] >= 0.8 > 0.01 > shares["clean-2.csv"]  # each set's own logger
    assert warnings_of(lambda detector: detector.detect(replay_chunks(same_logger, detector.window, real_time=False))) == []
    warned = warnings_of(lambda detector: detector.detect(replay_chunks(batched, detector.window, real_time=False), source="bus virtual:0"))
    assert len(warned) == 1 and warned[0].startswith("bus virtual:0: ")
    assert int(warned[0].split(": ")[1].split(" %")[0]) >= 80  # most 0.5 ms gaps fall within a 5 ms tick


@pytest.fixture(scope="module")
def kd_student(engine, teacher_root, tmp_path_factory):
    """A GAT student distilled from the tiny GAT teacher."""
    config = tiny_config(tmp_path_factory.mktemp("kd-student"), mode="normal", model_size="student",
                         use_knowledge_distillation=True, teacher_model_path=str(teacher_root / GAT))
    return engine.run(config).checkpoint


def log_odds_gap(student: Detector, teacher: Detector, capture) -> float:
    """Mean |student − teacher| attack log-odds over a capture's windows."""
    gap = torch.logit(calibration_scores(student, capture).double(), eps=1e-12) - torch.logit(calibration_scores(teacher, capture).double(), eps=1e-12)
    return float(gap.abs().mean())


def test_a_distilled_student_matches_its_teacher_again_on_the_recording(engine, teacher_root, kd_student, recordings, tmp_path):
    undistilled, distilled = tmp_path / "undistilled.pth", tmp_path / "distilled.pth"
    plain = calibrate(kd_student, [recordings / "clean.csv"], undistilled, engine=engine, distil=False)
    record = calibrate(kd_student, [recordings / "clean.csv"], distilled, engine=engine)
    trained, kept, changed = (load_checkpoint(path).state_dict for path in (kd_student, undistilled, distilled))
    assert "distilled" not in plain and all(torch.equal(kept[key], value) for key, value in trained.items())
    assert not all(torch.equal(changed[key], value) for key, value in trained.items())
    assert record["distilled"]["teacher"] == str(teacher_root / GAT) and record["distilled"]["strategy"] == "gat-attribution"
    assert record["distilled"]["steps"] == 100 and "weights distilled again from the teacher" in record["fitted"]
    centre = {path: np.asarray(load_checkpoint(path).extra["attack_classes"]["center"]) for path in (undistilled, distilled)}
    trained_centre = np.asarray(load_checkpoint(kd_student).extra["roles_attack_classes"]["center"])
    assert np.array_equal(centre[undistilled], trained_centre)  # the classes moved only with the representation
    assert not np.allclose(centre[distilled], trained_centre)
    teacher = Detector(teacher_root / GAT, engine=engine)
    teacher.preprocessing = Detector(distilled, engine=engine).preprocessing  # the teacher judging by roles, as the student now does
    before = log_odds_gap(Detector(undistilled, engine=engine), teacher, recordings / "clean-2.csv")
    after = log_odds_gap(Detector(distilled, engine=engine), teacher, recordings / "clean-2.csv")
    assert after < 0.75 * before, (before, after)  # closer to its teacher on the vehicle's other recording too (a third closer to a teacher of five networks)
    # its floor is its teacher's, unmoved: its own training thresholds describe the weights it had before
    teacher_floor = load_checkpoint(teacher_root / GAT).extra["roles_threshold"]
    assert record["floor"] == pytest.approx(teacher_floor, abs=1e-12)
    assert record["threshold"] == max(teacher_floor, record["threshold_with_headroom"])
    calibrate(kd_student, [recordings / "clean.csv"], tmp_path / "again.pth", engine=engine)
    again = load_checkpoint(tmp_path / "again.pth").state_dict
    assert all(torch.equal(again[key], value) for key, value in load_checkpoint(distilled).state_dict.items()), "deterministic"


def test_a_student_distilled_again_takes_its_teachers_floor_not_its_own_from_before(engine, teacher_root, kd_student, recordings, tmp_path):
    """Its own training thresholds describe the weights it had before: one set high (a student
    whose roles-only windows scored high in training) must not hold the re-distilled student's
    threshold over the attacks its teacher's floor lets through."""
    checkpoint = load_checkpoint(kd_student)
    stale = tmp_path / "stale-floor.pth"
    save_checkpoint(stale, attrs.evolve(checkpoint, extra={**checkpoint.extra, "roles_threshold": 1 - 1e-9, "threshold": 1 - 1e-9}))
    record = calibrate(stale, [recordings / "clean.csv"], tmp_path / "calibrated.pth", engine=engine)
    teacher_floor = load_checkpoint(teacher_root / GAT).extra["roles_threshold"]
    assert record["floor"] == pytest.approx(teacher_floor, abs=1e-12) and record["threshold"] < 1 - 1e-9


def test_a_student_whose_teacher_is_missing_or_other_is_refused(engine, kd_student, vocabulary_gat, recordings, tmp_path):
    out = tmp_path / "calibrated.pth"
    with pytest.raises(KdcoreError, match=r"teacher of .+ not found: .+missing\.pth; pass --teacher PATH or --no-distil"):
        calibrate(kd_student, [recordings / "clean.csv"], out, engine=engine, teacher=tmp_path / "missing.pth")
    with pytest.raises(KdcoreError, match=r"is not a gat trained on the student's data"):
        calibrate(kd_student, [recordings / "clean.csv"], out, engine=engine, teacher=vocabulary_gat)
    refused = CliRunner().invoke(app, ["calibrate", str(kd_student), "--normal", str(recordings / "clean.csv"), "--out", str(out),
                                       "--no-distil", "--teacher", str(vocabulary_gat)])
    assert refused.exit_code == 2 and "--teacher is given but --no-distil too" in refused.output
    assert not out.exists()


def test_a_student_of_a_strategy_not_on_recordings_keeps_its_weights(engine, teacher_root, recordings, tmp_path):
    config = tiny_config(tmp_path, mode="autoencoder", model_size="student", use_knowledge_distillation=True,
                         teacher_model_path=str(teacher_root / VGAE))
    student = engine.run(config).checkpoint
    record = calibrate(student, [recordings / "clean.csv"], tmp_path / "calibrated.pth", engine=engine)
    assert "distilled" not in record
    trained, calibrated = load_checkpoint(student).state_dict, load_checkpoint(tmp_path / "calibrated.pth").state_dict
    moved = ("error_scale", "feature_head.2.bias")  # the roles' error scale, the bus's size: not distilled again
    assert all(torch.equal(calibrated[key], value) for key, value in trained.items() if key not in moved)
    with pytest.raises(KdcoreError, match="distilled with 'vgae-dual-signal', which does not distil on recordings; --teacher does not apply"):
        calibrate(student, [recordings / "clean.csv"], tmp_path / "other.pth", engine=engine, teacher=teacher_root / VGAE)


def test_an_uncalibrated_model_on_another_vehicle_says_to_calibrate_it(engine, teacher_root, recordings, tmp_path, caplog):
    """Before calibration the training vehicle's threshold decides; on another car that may call
    every window an attack, so ``evaluate`` and ``detect`` say so once — and not on the vehicle the
    model knows, nor once it is calibrated."""
    def warnings_on(model, data):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="kdcore.detect"):
            evaluate(Detector(model, engine=engine), data)
        return [record.getMessage() for record in caplog.records if "never calibrated" in record.getMessage()]

    another = warnings_on(teacher_root / GAT, [recordings / "test_01_dos", recordings / "clean-2.csv"])
    assert len(another) == 1 and f"kdcore calibrate {teacher_root / GAT} --normal" in another[0]
    assert warnings_on(teacher_root / GAT, [teacher_root / "data/tiny/test_01_dos/dos.csv"]) == []
    calibrate(teacher_root / GAT, [recordings / "clean.csv"], tmp_path / "calibrated.pth", engine=engine)
    assert warnings_on(tmp_path / "calibrated.pth", [recordings / "test_01_dos"]) == []
