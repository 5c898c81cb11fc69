"""``kdcore calibrate``: fit a trained detector to a vehicle from a short attack-free recording.

What a detector knows of the vehicle it was trained on is in its checkpoint's preprocessing and
threshold, not in its weights. Calibration changes the preprocessing for the new vehicle
(``Preprocessing.calibrated``): an ``agnostic`` model drops its training vehicle's block and
judges the new one by its nodes' roles; a ``vocabulary`` model takes the new vehicle's feature
scaling and aliases each CAN ID it has never seen to the training ID whose profile it resembles
most. Then the decision threshold is fitted at ``target_fpr`` of the recording's windows
(``recording_threshold``: at the highest of them where they are too few to show that tail) and
raised by ``HEADROOM`` of the recording's score spreads: the vehicle's other drives are not the
recording's windows over again (measured, the GATs' and VGAEs' false positives on those drives
fell from up to 0.077 to up to 0.020, docs/transfer.md) — never below the threshold fitted in
training on the same footing (for an agnostic model, on validation
windows judged by roles alone; for a fused detector, its decision line 0.5): a short recording
can show that a vehicle's normal traffic scores higher than the validation traffic did, but its
few minutes (often at idle) cannot show how far above its usual level the vehicle's driving
scores; measured, a lowered threshold raised false positives on the same vehicle's other
recordings (docs/transfer.md). A GAT's floor keeps its height above the car's usual level: it
moves down as far as the recording's median score lies below the validation's, in log-odds
(``floor_at_the_recordings_level``). The recording's scores also give the spread that alerts'
margins count (``kdcore.metrics.ScoreSpread``: it decides when one window opens an incident).
The weights are not touched but in two places. An agnostic VGAE (which takes the error scale it
fitted in training on windows judged by roles) reconstructs the new bus's size: the output bias
of its ``node_share`` moves onto the recording's (``_bus_size_in_reconstruction``). A GAT
student distilled in training matches its teacher again on the recording first
(``kdcore.recording_kd``), and its floor is its teacher's, unmoved (it has fitted the
recording's windows; its own training thresholds describe the weights it had before). The
result is an ordinary checkpoint, with a ``calibration`` record of what was fitted on how much
traffic. A fused detector calibrates its VGAE and GAT (written next to it), their
normalisations and its fused threshold together.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch_geometric.loader import DataLoader

from kdcore.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from kdcore.classes import AttackClasses, error_shares
from kdcore.data.captures import capture_files
from kdcore.data.formats import read_capture
from kdcore.data.formats.base import CaptureFormat
from kdcore.data.frames import SharedStamps
from kdcore.data.graphs import WindowGraphs
from kdcore.data.preprocess import Preprocessing
from kdcore.data.windows import build_window_graphs, node_keys
from kdcore.detect import model_embedder, model_scorer, scoring_mode
from kdcore.errors import KdcoreError
from kdcore.metrics import ScoreSpread, log_odds
from kdcore.plugins.modes.autoencoder import check_score
from kdcore.plugins.modes.fusion import DECISION_LINE
from kdcore.recording_kd import distil_on_recording, recording_distillation
from kdcore.threads import torch_threads

MIN_WINDOWS = 20  # clean windows needed to fit the scaling and a threshold on
MAX_MIN_FRAMES = 5000  # calibration never asks for more than this many frames
HEADROOM = 1.0  # score spreads the threshold sits above the recording's quantile: room for the vehicle's other drives
BATCH_WINDOWS = 512


def recording_threshold(normal_scores: torch.Tensor, target_fpr: float) -> float:
    """The threshold a window of the vehicle's other drives reaches with a chance of at most
    ``target_fpr``, judged from the recording's n windows: the ⌈(n + 1)(1 − target_fpr)⌉-th lowest
    of their scores (the split-conformal quantile): their highest below 2 / target_fpr − 1 windows
    (199 at 0.01), and below 1 / target_fpr − 1 even that cannot show the tail.

    Training fits its thresholds on hundreds of validation windows, where the interpolated
    quantile (``metrics.threshold_at_fpr``) serves (raised by ``threshold_headroom``, as a
    recording's is by the headroom). A
    calibration recording is one short drive (5 000 frames is 50 windows): an interpolated
    quantile lies between its two highest windows, and the same vehicle's other drives exceed it
    more often than ``target_fpr`` (measured, docs/transfer.md)."""
    n = normal_scores.numel()
    if n == 0:
        raise ValueError("no attack-free windows to fit the decision threshold on")
    rank = min(math.ceil((n + 1) * (1.0 - target_fpr) - 1e-9), n)  # 1-based; the tolerance absorbs float error
    return float(torch.sort(normal_scores.double().flatten()).values[rank - 1])


def minimum_frames(window: int) -> int:
    """Frames a calibration recording needs: ``MIN_WINDOWS`` windows, never more than 5 000 frames."""
    return min(MIN_WINDOWS * window, MAX_MIN_FRAMES)


def read_clean_windows(
    paths: Sequence[str | Path], data: dict[str, Any], capture_format: str | CaptureFormat | None = None, on_bad_rows: str = "error",
) -> tuple[WindowGraphs, dict[str, Any]]:
    """The windows of the attack-free captures (files or folders of them), cut as the model's
    training data was, and what was read: files, frames, seconds (None without timestamps), and
    the share of frames stamped as the one before (``SharedStamps``: ``detect`` warns where the
    traffic it scores is stamped otherwise, another logger's timing)."""
    window = int(data["window_size"])
    files = [file for path in map(Path, paths) for file in _captures(path)]
    graphs, frames, spans, stamps = [], 0, [], SharedStamps()
    for file in files:
        table = read_capture(file, capture_format, on_bad_rows)
        if table.attack_rows:
            raise KdcoreError(
                f"{file}: carries {table.attack_rows} attack-labelled frames; calibrate on attack-free traffic only"
            )
        frames += len(table)
        spans.append(float(np.ptp(table.timestamp)) if table.timestamps and len(table) else None)
        stamps.add(table, follows=False)
        graphs.append(build_window_graphs(node_keys(table, data.get("graph_node", "can_id")), window, window))
    needed = minimum_frames(window)
    if frames < needed:
        raise KdcoreError(
            f"{', '.join(map(str, files))}: {frames} frames are too few to calibrate on; record at least {needed} "
            f"attack-free frames ({MIN_WINDOWS} windows of {window}, at most {MAX_MIN_FRAMES})"
        )
    seconds = None if None in spans else round(sum(spans), 3)
    return WindowGraphs.concat(graphs), {"captures": [str(file) for file in files], "frames": frames, "seconds": seconds,
                                         "shared_stamps": None if None in spans else stamps.rounded}


def _captures(path: Path) -> list[Path]:
    if not path.exists():
        raise KdcoreError(f"calibration capture not found: {path}")
    files = capture_files(path) if path.is_dir() else [path]
    if not files:
        raise KdcoreError(f"{path}: no capture files to calibrate on")
    return files


def calibrate(
    model: str | Path, normal: Sequence[str | Path], out: str | Path, target_fpr: float | None = None,
    capture_format: str | CaptureFormat | None = None, on_bad_rows: str = "error", engine=None, headroom: float | None = None,
    distil: bool = True, teacher: str | Path | None = None,
) -> dict[str, Any]:
    """Write ``out``: ``model`` calibrated on the attack-free captures ``normal``; returns the
    ``calibration`` record saved in it. ``target_fpr`` defaults to the one the model was trained
    with; ``headroom`` (score spreads the threshold is raised above the recording's quantile)
    defaults to ``HEADROOM``. ``distil``: a student distilled with a strategy that is
    ``on_recordings`` first matches its teacher (``teacher``, if given) again on the recording
    (``kdcore.recording_kd``); a fused detector's inputs each their own."""
    from kdcore.engine import Engine

    started = time.perf_counter()
    model, out = Path(model), Path(out)
    if out.resolve() == model.resolve():
        raise KdcoreError(f"--out {out} is the model itself; write the calibrated model to a new file")
    checkpoint = _checkpoint(model)
    if target_fpr is None:
        target_fpr = float(checkpoint.config.get("target_fpr", 0.01))
    if not 0.0 <= target_fpr < 1.0:
        raise KdcoreError(f"--target-fpr must be in [0, 1), got {target_fpr}")
    headroom = HEADROOM if headroom is None else headroom
    if not headroom >= 0.0:
        raise KdcoreError(f"--headroom must be 0 or more score spreads, got {headroom}")
    if teacher is not None and (checkpoint.model == "dqn" or not distil):
        raise KdcoreError("--teacher names the teacher of a GAT or VGAE student to distil; a fused detector's inputs "
                          "are distilled from their own teachers" if distil else "--teacher is given but --no-distil too")
    graphs, read = read_clean_windows(normal, checkpoint.extra["data"], capture_format, on_bad_rows)
    teaching = Teaching(distil, teacher)
    with torch_threads(1):
        record = _calibrate(engine or Engine(), model, checkpoint, graphs, read, out, target_fpr, headroom, teaching)
    record["calibration_seconds"] = round(time.perf_counter() - started, 3)
    _save(out, checkpoint, record)
    return record


def _checkpoint(path: Path) -> Checkpoint:
    """The checkpoint to calibrate; an agnostic VGAE's with the error scale of windows judged by
    roles (``roles_error_scale``), as the new vehicle will be judged."""
    checkpoint = load_checkpoint(path)
    if checkpoint.model not in ("gat", "vgae", "dqn") or "preprocessing" not in checkpoint.extra.get("data", {}):
        raise KdcoreError(f"{path}: not a GAT, VGAE or fusion checkpoint trained by kdcore on captures")
    check_score(checkpoint, path)
    if "roles_error_scale" in checkpoint.extra:
        scale = torch.tensor(checkpoint.extra["roles_error_scale"], dtype=checkpoint.state_dict["error_scale"].dtype)
        checkpoint = attrs.evolve(checkpoint, state_dict={**checkpoint.state_dict, "error_scale": scale})
    return checkpoint


@attrs.frozen
class Teaching:
    """Whether students are distilled again on the recording, and from which teacher (None: the
    one each was distilled from in training)."""

    distil: bool = True
    teacher: str | Path | None = None


def _calibrate(engine, model: Path, checkpoint: Checkpoint, graphs: WindowGraphs, read: dict[str, Any], out: Path,
               target_fpr: float, headroom: float, teaching: Teaching) -> dict[str, Any]:
    """The calibration record of ``checkpoint`` on ``graphs`` (its preprocessing, threshold, the
    weights where a student was distilled again and, for fusion, the rest under ``"extra"``);
    fusion inputs are written beside ``out``."""
    preprocessing = Preprocessing.from_dict(checkpoint.extra["data"]["preprocessing"]).calibrated(graphs)
    windows = preprocessing.apply(graphs)
    network = engine.load_model(checkpoint, model) if checkpoint.model != "dqn" else None
    again = recording_distillation(engine, checkpoint, model, teaching.teacher) if teaching.distil and network else None
    loader = DataLoader(windows, batch_size=BATCH_WINDOWS)
    distilled, trained_embeddings = None, None
    if again:
        trained_embeddings = _embeddings(network, checkpoint.model, loader)
        distilled = distil_on_recording(engine, network, checkpoint, *again, windows, scoring_mode(checkpoint.model))
    with torch.inference_mode():
        return _fit(engine, model, checkpoint, network, graphs, loader, preprocessing, read, out, target_fpr, headroom, teaching,
                    distilled, trained_embeddings)


def _embeddings(network, model: str, loader) -> np.ndarray:
    """The window representations attack classes are fitted in, of every window of ``loader``."""
    embed = model_embedder(network, model)
    return np.concatenate([embed(batch).cpu().numpy() for batch in loader])


def _error_shares(network, model: str, loader) -> np.ndarray | None:
    """``kdcore.classes.error_shares`` of every window of ``loader``; None for a model whose node
    scores are not errors."""
    mode, shares = scoring_mode(model), []
    for batch in loader:
        node_scores = mode.node_scores(network, batch)
        shares.append(None if node_scores is None else error_shares(node_scores.float().cpu().numpy(), batch.ptr.cpu().numpy()))
        if shares[-1] is None:
            return None
    return np.concatenate(shares)


def _fit(engine, model: Path, checkpoint: Checkpoint, network, graphs: WindowGraphs, loader, preprocessing: Preprocessing,
         read: dict[str, Any], out: Path, target_fpr: float, headroom: float, teaching: Teaching,
         distilled: dict[str, Any] | None, trained_embeddings: np.ndarray | None) -> dict[str, Any]:
    """The record of ``_calibrate``, from the model as it now scores; ``trained_embeddings``: the
    recording's window representations before it was distilled again."""
    extra: dict[str, Any] = {}
    fitted_on = scoring_mode(checkpoint.model).window_embedding
    if preprocessing.representation == "vocabulary":
        fitted = ["CAN-ID aliases", "feature scaling"]
        classes = AttackClasses.saved_in(checkpoint.extra, fitted_on)
    else:
        fitted = ["roles only"]  # and the classes of windows judged by roles, as this vehicle's are
        classes = AttackClasses.saved_in(checkpoint.extra, fitted_on, "roles_attack_classes")
    bus_size_shift = None
    if checkpoint.model == "dqn":
        normal_scores, fusion = _calibrate_fusion(engine, model, checkpoint, graphs, read, loader, out, target_fpr, headroom, teaching)
        extra.update(fusion)
        fitted += ["input normalisations", "inputs"]
    else:
        if distilled:
            fitted.append("weights distilled again from the teacher")
        bus_size_shift = _bus_size_in_reconstruction(network, checkpoint.model, preprocessing, loader)
        if bus_size_shift is not None:
            fitted.append("bus size in the reconstruction")
        normal_scores = model_scorer(network, checkpoint.model)(loader)
        if classes is not None:
            embeddings = _embeddings(network, checkpoint.model, loader)
            if trained_embeddings is not None:  # distilled again: the classes go where the vehicle's windows went
                classes = classes.moved((embeddings - trained_embeddings).mean(axis=0))
            classes = classes.calibrated(embeddings, _error_shares(network, checkpoint.model, loader))
            extra["attack_classes"] = classes.to_dict()
            fitted.append("attack-class radius")
    threshold = recording_threshold(normal_scores, target_fpr)
    spread = ScoreSpread.fit(normal_scores, probabilities=checkpoint.model != "vgae")
    raised = spread.raised(threshold, headroom)
    extra["score_spread"] = spread.to_dict()
    trained = training_thresholds(checkpoint)
    if checkpoint.model == "dqn":
        # The inputs now sit at 0.5 at this vehicle's own thresholds (another scale than in training):
        # below that line no input, weighed as the agent weighs it, calls an attack on this vehicle.
        floor = DECISION_LINE
    elif distilled:  # it scores as its teacher does now: the teacher's floor, kept where it was
        floor = _on_the_same_footing(training_thresholds(load_checkpoint(distilled["teacher"])), preprocessing.representation)[0]
    else:
        floor = floor_at_the_recordings_level(*_on_the_same_footing(trained, preprocessing.representation), normal_scores, spread)
    return {
        **read,
        "windows": len(graphs),
        "representation": preprocessing.representation,
        "fitted": [*fitted, "threshold", "score spread"],
        "aliased_ids": len(preprocessing.aliases),
        **({"class_radius_scale": classes.radius_scale, "class_share_scale": classes.share_scale} if "attack_classes" in extra else {}),
        "target_fpr": target_fpr,
        "threshold_on_recording": threshold,
        "headroom_spreads": headroom,
        "threshold_with_headroom": raised,
        "trained": trained,
        "floor": floor,
        "threshold": max(raised, floor),
        "calibrated_from": str(model),
        **({"distilled": distilled} if distilled else {}),
        **({"bus_size_shift": bus_size_shift} if bus_size_shift is not None else {}),
        "preprocessing": preprocessing.to_dict(),
        "extra": extra,
        **({"state_dict": network.state_dict()} if distilled or bus_size_shift is not None else {}),
    }


def _bus_size_in_reconstruction(network, model: str, preprocessing: Preprocessing, loader) -> float | None:
    """An agnostic VGAE's reconstruction of ``node_share`` moved onto the recording's: by the mean
    of what the recording's nodes hold over what the VGAE makes of them. None where nothing moves.

    ``node_share``, a window's nodes per frame, is the size of the bus: the same on every drive of
    a car (civic8th 0.18-0.20, the camaro 0.38), and a flood lowers it, a fuzzing burst raises it.
    A VGAE trained on one bus reconstructs that bus's level, so on a larger one every normal window
    is far from it and a flood brings the window nearer: trained on civic8th, the VGAEs ranked the
    camaro's DoS below its normal traffic (AUROC 0.02-0.07); with the reconstruction moved, 0.99,
    and the camaro-trained VGAEs kept the other cars' fuzzing (docs/transfer.md). Moving the input
    instead (for every model) made the GATs flag civic8th's ``vsslog``; the GAT is not
    reconstructing a level, so only the VGAE's output moves."""
    if model != "vgae" or preprocessing.representation != "agnostic" or "node_share" not in preprocessing.roles:
        return None
    column = preprocessing.roles.index("node_share")
    mode = scoring_mode("vgae")
    residual, nodes = 0.0, 0
    for batch in loader:
        recon = mode.outputs(network, batch)["recon"].float()
        residual += float((batch.x[:, column] - recon[:, column]).double().sum())
        nodes += batch.num_nodes
    shift = residual / nodes
    network.shift_reconstruction(column, shift)
    return shift


def training_thresholds(checkpoint: Checkpoint) -> dict[str, float]:
    """The thresholds fitted in training (kept through calibrations): ``threshold``, and for an
    agnostic model ``roles_threshold``, fitted on windows judged without their profile — the
    floor when the calibrated model judges by roles alone; with the validation normal windows'
    median scores under each (``normal_median``, ``roles_normal_median``; absent in checkpoints
    trained before they were kept)."""
    calibration = checkpoint.extra.get("calibration")
    extra = calibration["trained"] if calibration else checkpoint.extra
    keys = ("threshold", "roles_threshold", "normal_median", "roles_normal_median")
    return {key: float(extra[key]) for key in keys if key in extra}


def _on_the_same_footing(thresholds: dict[str, float], representation: str) -> tuple[float, float | None]:
    """Of ``training_thresholds``, the one fitted as the calibrated model judges — for an agnostic
    model, on windows judged by roles alone — and the median normal score under it (None: not kept)."""
    if representation == "agnostic" and "roles_threshold" in thresholds:
        return thresholds["roles_threshold"], thresholds.get("roles_normal_median")
    return thresholds["threshold"], thresholds.get("normal_median")


def floor_at_the_recordings_level(threshold: float, median: float | None, normal_scores: torch.Tensor, spread: ScoreSpread) -> float:
    """The training threshold as the floor of a calibrated threshold — for a model that scores
    probabilities (a GAT), moved down by as far as the recording's median score lies below the
    validation normal windows' median, in log-odds: the floor keeps its height above the car's
    normal windows, the height that held the training car's other drives, which a short recording
    at idle cannot show. A GAT's log-odds are a learnt confidence whose level differs from car to
    car (another car's recording sat 0.5–2.6 log-odds below the training car's drives, and the
    unmoved floor hid an attack never trained on: docs/transfer.md). A VGAE's errors are measured
    in its training's normal error, the same unit on any car: its floor stays where it was (moved,
    it let through another logger's timing). Never moved up: a recording that scores higher
    raises the threshold through its own quantile."""
    if median is None or not spread.log_odds:
        return threshold
    drop = float(log_odds(median) - log_odds(normal_scores.double().median()))
    return float(torch.sigmoid(log_odds(threshold) - drop)) if drop > 0 else threshold


def _save(out: Path, checkpoint: Checkpoint, record: dict[str, Any]) -> None:
    """The checkpoint with the record's preprocessing, threshold and extra; the record kept in it too."""
    preprocessing, extra = record.pop("preprocessing"), record.pop("extra")
    state_dict = record.pop("state_dict", checkpoint.state_dict)  # a student distilled again has new weights
    data = {**checkpoint.extra["data"], "preprocessing": preprocessing}
    save_checkpoint(out, Checkpoint(
        model=checkpoint.model, hparams=checkpoint.hparams, state_dict=state_dict, config=checkpoint.config,
        extra={**checkpoint.extra, **extra, "data": data, "threshold": record["threshold"], "calibration": record},
    ))


def _calibrate_fusion(engine, model: Path, checkpoint: Checkpoint, graphs: WindowGraphs, read: dict[str, Any], loader,
                      out: Path, target_fpr: float, headroom: float, teaching: Teaching) -> tuple[torch.Tensor, dict[str, Any]]:
    """Calibrate both inputs (written as ``<out stem>-vgae`` / ``-gat`` beside ``out``) and refit the
    inputs' normalisations on the clean windows (0.5 at each calibrated input's threshold); the
    clean windows' fused scores, to fit the fused threshold on, and the fusion's new extra."""
    from kdcore.fusion import FusionPredictor, fit_normalisers

    fusion, thresholds = dict(checkpoint.extra["fusion"]), {}
    for name in ("vgae", "gat"):
        path, input_out = Path(fusion[name]["path"]), out.with_name(f"{out.stem}-{name}{out.suffix}")
        input_checkpoint = _checkpoint(path)
        with torch.inference_mode(False):  # an input may be distilled again: that trains
            record = _calibrate(engine, path, input_checkpoint, graphs, read, input_out, target_fpr, headroom, teaching)
        thresholds[name] = record["threshold"]
        _save(input_out, input_checkpoint, record)
        fusion[name] = {**fusion[name], "path": str(input_out)}
    predictor, _ = FusionPredictor.from_checkpoint(engine, model, inputs={name: fusion[name]["path"] for name in ("vgae", "gat")})
    probability, raw = predictor.inputs(loader)
    predictor.normalisers = fit_normalisers(probability, raw, thresholds)  # 0.5 at each calibrated input's threshold
    for name, normaliser in predictor.normalisers.items():
        fusion[name] = {**fusion[name], **attrs.asdict(normaliser)}
    return predictor.decide(probability, raw)["score"], {"fusion": fusion}
