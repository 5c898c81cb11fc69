"""Detection on vehicles and attacks a model was not trained on, printed as one JSON object.

    python benchmarks/bench_transfer.py [--shared ../shared] [--representation agnostic vocabulary]
                                        [--epochs 10] [--part vehicles road] [--work DIR]
                                        [--gat-mode normal|curriculum] [--kd-noise 0]
                                        [--train-vehicle camaro|civic8th] [--train-stride N]

(a) ``vehicles``: real attack-free traffic of four cars (``shared/data/real/vehicles``). One is
the training vehicle (``--train-vehicle``: the camaro, 66 CAN IDs, or civic8th, 23): DoS, fuzzing
and spoofing are injected (``kdcore.data.traffic``) into some of its captures to train on, with a
burst in each capture's validation part; others, with the same attacks plus replay (never seen in
training), are its known-vehicle test sets. For every other vehicle with enough clean traffic
(of camaro, civic8th, yaris09), one capture set aside is the calibration recording, and DoS,
fuzzing, spoofing and replay are injected into *other* captures of that vehicle. For each model
— teacher, student, student+KD of the GAT and the VGAE, and fusion of the KD students — it
reports AUROC, F1 and FPR on each unknown vehicle before calibration, F1 and FPR after ``kdcore
calibrate`` on that vehicle's clean recording, and the calibration's seconds. mazda3 is left
out: its captures do not share one ID set (15 IDs in its longest capture, 36-39 in the others,
under 5 000 frames).

The GATs train in ``normal`` mode, or with ``--gat-mode curriculum`` as ``make demo`` trains them
(after the VGAE teacher, which orders their curriculum); each mode has its own model folder.
``--kd-noise X``: the KD students train with ``kd_noise`` X (docs/config.md), in a folder of their own.
``--train-stride N``: every model trains on windows N frames apart (``train_window_stride``), in a folder of its own.
``--synthetic-attacks X``: every supervised model trains with ``synthetic_attacks`` X, in a folder of its own.

(b) ``road``: the ROAD masquerade captures (``shared/data/real/road-statgraph``), with the engine
coolant masquerade held out of training whole (``test_max_engine_coolant_temp``: a signal never
attacked in training); the other three are cut into train/val/test by the ``road`` dataset.

Headline keys (the first representation given): ``transfer_min_auroc_before``,
``transfer_min_f1_after``, ``transfer_max_fpr_after`` over unknown vehicles, models and sets;
``road_min_f1_gat`` over the GAT teacher and KD student on every ROAD test set, and
``road_min_f1_gat_trained_signals`` on those of the signals attacked in training (the held-out
masquerade aside); ``localisation_min_top1``: the lowest share of detected attack windows whose
top suspect is an attacked ID, over every model and vehicle, on the attacks that forge one ID
(DoS, spoofing, replay); ``class_accuracy_min``: the lowest attack-class accuracy of detected
windows over every model and vehicle, on the attacks trained on; ``unseen_as_unknown_min``: the
lowest share of an attack never trained on (replay) whose detected windows are called ``unknown``,
over every model and vehicle; ``incident_localisation_min_top1``
and ``incident_class_accuracy_min``: the same over incidents (their suspects and their class, what
an analyst reads); ``incident_delay_windows_max``: the highest median time-to-detect of a set, in
windows from a burst's first window to the one that opens its incident; ``kd_sets_short_of_teacher``:
of ``kd_sets_compared`` (every test set of both parts, once for the GAT and once for the VGAE),
those where the student+KD is more than 1 F1 point under its teacher or under the plain student
(F1 to two decimals); ``fusion_sets_below_better_input``: of ``fusion_sets_compared``, those where
fusion is under the better of its inputs (the KD students). Each set's figures also say how
its alerts localise, classify and merge into incidents (``alerts``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from kdcore import Engine, RunConfig  # noqa: E402
from kdcore.calibrate import calibrate  # noqa: E402
from kdcore.data.formats import read_capture  # noqa: E402
from kdcore.data.formats.writers import write_csv  # noqa: E402
from kdcore.data.traffic import attack_intervals, inject, reaching_validation  # noqa: E402
from kdcore.detect import Detector  # noqa: E402
from kdcore.errors import KdcoreError  # noqa: E402
from kdcore.evaluate import evaluate  # noqa: E402

HERE = Path(__file__).resolve().parent
VEHICLES = {  # per vehicle, as the training vehicle: clean captures and one capture per attack to inject
    # into (``train``), its own test captures (``tests``); as an unknown vehicle: the calibration
    # recording and the same tests. yaris09 holds too little traffic to train on.
    "camaro": {"train": {"train_01_attack_free": {None: ["accycle.log", "engineon.log"]},
                         "train_02_with_attacks": {"dos": ["hudcontrol.log"], "fuzzy": ["crscntrlbtns.log"], "spoof": ["reverse.log"]}},
               "calibration": ["engineon.log"],
               "tests": {"dos": "tcstate.log", "fuzzy": "keyoff.log", "spoof": "turnwheel.log", "replay": "reverselog.trc"}},
    "civic8th": {"train": {"train_01_attack_free": {None: ["startandturnwheel.trc", "startedfortest.log", "acswitch.trc"]},
                           "train_02_with_attacks": {"dos": ["2revlog.log"], "fuzzy": ["acon.log"], "spoof": ["startengine.trc"]}},
                 "calibration": ["engineon.log"],
                 "tests": {"dos": "40mph.trc", "fuzzy": "revlog.log", "spoof": "disconnecteconnect.trc", "replay": "vsslog.log"}},
    "yaris09": {"calibration": ["aconoff.log", "steering.log", "turnonstockecu.log"],
                "tests": {"dos": "engineonaconoffstockecu.trc", "fuzzy": "accellog.log", "spoof": "revstockecu.trc", "replay": "cllutchinout.log"}},
}
TRAIN_VEHICLES = [vehicle for vehicle, plan in VEHICLES.items() if "train" in plan]
ROAD_HELD_OUT = "Deal_max_engine_coolant_temp_attack_masquerade.csv"
MODELS = (  # name, mode, size, KD
    ("gat_teacher", "normal", "teacher", False),
    ("gat_student", "normal", "student", False),
    ("gat_student_kd", "normal", "student", True),
    ("vgae_teacher", "autoencoder", "teacher", False),
    ("vgae_student", "autoencoder", "student", False),
    ("vgae_student_kd", "autoencoder", "student", True),
)
GAT_MODES = ("normal", "curriculum")


def training_order(gat_mode: str) -> list[tuple[str, str, str, bool]]:
    """``MODELS`` with the GATs trained in ``gat_mode``, the VGAEs first: a curriculum GAT learns
    in the order its VGAE teacher gives (each run seeds itself, so the order changes no model)."""
    models = [(name, gat_mode if mode == "normal" else mode, size, kd) for name, mode, size, kd in MODELS]
    return sorted(models, key=lambda model: model[1] != "autoencoder")


def in_models_order(results: dict) -> dict:
    return {name: results[name] for name, *_ in MODELS}


def injected(source: Path, attack: str | None, out: Path, seed: int, into_validation: bool = False) -> Path:
    """``source`` with ``attack`` injected (none: as it is), written in the can-train-and-test
    layout; ``into_validation``: where no burst reaches the capture's validation part, one more
    like the last is placed there, so that every seed validates on attacks (fusion trains on them)
    and training keeps every burst it had."""
    table = read_capture(source)
    if attack is not None:
        intervals = attack_intervals(table, seed)
        if into_validation:
            reaching = reaching_validation(intervals, float(table.timestamp.min()), float(table.timestamp.max()))
            intervals = intervals if reaching == intervals else [*intervals, reaching[-1]]
        table = inject(table, attack, seed, intervals=intervals)
    write_csv(table, out)
    return out


def prepare_vehicles(vehicles: Path, work: Path, train_vehicle: str, seed: int) -> dict[str, Path]:
    """The training vehicle's can-train-and-test folder, and each other vehicle's test folder."""
    folders = {}
    for vehicle, plan in VEHICLES.items():
        root = work / vehicle
        if vehicle == train_vehicle:
            for folder, captures in plan["train"].items():
                for attack, files in captures.items():
                    for name in files:
                        injected(vehicles / vehicle / name, attack, root / folder / f"{attack or 'normal'}-{Path(name).stem}.csv", seed,
                                 into_validation=True)
        for index, (attack, name) in enumerate(plan["tests"].items(), 1):
            injected(vehicles / vehicle / name, attack, root / f"test_{index:02d}_{attack}" / f"{attack}-{Path(name).stem}.csv", seed)
        folders[vehicle] = root
    return folders


def train_all(engine: Engine, base: dict, gat_mode: str) -> tuple[dict[str, Path], dict[str, str]]:
    """Teachers, students and KD students of both models, then fusion of the KD students; and
    why a model could not be trained (fusion needs attack windows in the validation split)."""
    checkpoints, skipped = {}, {}
    for name, mode, size, kd in training_order(gat_mode):
        config = RunConfig(mode=mode, model_size=size, use_knowledge_distillation=kd, **base)
        checkpoints[name] = engine.run(config).checkpoint
        print(f"trained {name}", file=sys.stderr, flush=True)
    checkpoints = in_models_order(checkpoints)
    try:
        checkpoints["fusion_students"] = engine.run(RunConfig(mode="fusion", model_size="student", **base)).checkpoint
    except KdcoreError as error:
        skipped["fusion_students"] = str(error)
    return checkpoints, skipped


def figures(metrics: dict) -> dict:
    """A set's detection figures, and how its alerts localise, classify and merge into incidents."""
    rounded = lambda value: None if value is None else round(value, 4)  # noqa: E731
    incidents = metrics.get("incidents", {})
    alerts = {
        "top1": rounded(metrics.get("localisation", {}).get("top1")),
        "class_accuracy": rounded((metrics.get("attack_classes") or {}).get("accuracy")),
        "unseen_as_unknown": rounded((metrics.get("attack_classes") or {}).get("unseen_as_unknown")),
        "incident_top1": rounded(incidents.get("localisation", {}).get("top1")),  # what an analyst reads: incidents
        "incident_class_accuracy": rounded(incidents.get("class_accuracy")),
        "incidents_per_burst": incidents.get("incidents_per_burst_median"),
        "delay_windows": incidents.get("time_to_detect_windows_median"),
        "false_incidents": incidents.get("false_incidents"),
    }
    (_, false_positives), _ = metrics["confusion_matrix"]
    return {"auroc": round(metrics["auroc"], 4), "f1": round(metrics["f1"], 4), "fpr": round(metrics["fpr"], 4),
            # what an FPR weighs: yaris09's four test sets hold 48 normal windows in all (seed 2)
            "false_positives": false_positives, "normal_windows": metrics["windows"] - metrics["attack_windows"],
            # a test set's logger: how many frames share the stamp of the one before (evaluate's, per set)
            **({"shared_stamps": metrics["shared_stamps"]} if "shared_stamps" in metrics else {}),
            **({"alerts": alerts} if incidents else {})}


def scores_on(checkpoint: Path, data: Path) -> dict:
    metrics, _ = evaluate(Detector(checkpoint), [data])
    return {**figures(metrics), "test_sets": {name: figures(m) for name, m in metrics["test_sets"].items()}}


def models_folder(representation: str, gat_mode: str, training: dict) -> str:
    """A model root per setting: fusion takes a curriculum GAT where there is one, and KD students
    trained with ``kd_noise`` are other students, models trained on other windows other models."""
    return (f"{representation}-{gat_mode}" + (f"-kd_noise{training['kd_noise']:g}" if training["kd_noise"] else "")
            + (f"-train_stride{training['train_window_stride']}" if training["train_window_stride"] else "")
            + (f"-synthetic{training['synthetic_attacks']:g}" if training["synthetic_attacks"] else ""))


def vehicles_part(shared: Path, work: Path, representation: str, training: dict, gat_mode: str, train_vehicle: str) -> dict:
    """``training``: the RunConfig keys every model trains with (max_epochs, seed, kd_noise, train_window_stride,
    synthetic_attacks)."""
    folders = prepare_vehicles(shared / "data/real/vehicles", work / "data", train_vehicle, training["seed"])
    models = work / models_folder(representation, gat_mode, training)
    base = dict(dataset="captures", data_root=str(folders[train_vehicle]), experiment_root=str(models),
                representation=representation, progress_bar=False, **training)
    started = time.perf_counter()
    checkpoints, skipped = train_all(Engine(), base, gat_mode)
    results: dict = {"train_seconds": round(time.perf_counter() - started, 1), "models": {}, "skipped": skipped}
    for name, checkpoint in checkpoints.items():
        row = {"known_vehicle": scores_on(checkpoint, folders[train_vehicle])}
        for vehicle, plan in VEHICLES.items():
            if vehicle == train_vehicle:
                continue
            calibrated = models / "calibrated" / vehicle / f"{name}.pth"
            calibrated.parent.mkdir(parents=True, exist_ok=True)
            record = calibrate(checkpoint, [shared / "data/real/vehicles" / vehicle / f for f in plan["calibration"]], calibrated)
            row[vehicle] = {"before": scores_on(checkpoint, folders[vehicle]), "after": scores_on(calibrated, folders[vehicle]),
                            "calibration_seconds": record["calibration_seconds"], "calibration_frames": record["frames"]}
        results["models"][name] = row
        print(f"evaluated {name}", file=sys.stderr, flush=True)
    return results


def road_part(shared: Path, work: Path, representation: str, training: dict, gat_mode: str) -> dict:
    road = shared / "data/real/road-statgraph"
    root = work / "road-data"
    (root / "test_held_out").mkdir(parents=True, exist_ok=True)
    for capture in sorted(road.glob("*.csv")):
        link = root / ("test_held_out" if capture.name == ROAD_HELD_OUT else ".") / capture.name
        if not link.exists():
            link.symlink_to(capture)
    base = dict(dataset="road", data_root=str(root), experiment_root=str(work / f"road-{models_folder(representation, gat_mode, training)}"),
                representation=representation, progress_bar=False, **training)
    engine = Engine()
    results = {}
    for name, mode, size, kd in training_order(gat_mode):
        result = engine.run(RunConfig(mode=mode, model_size=size, use_knowledge_distillation=kd, **base))
        metrics = result.metrics
        results[name] = {"params": metrics["params"], "test_sets": {test: figures(m) for test, m in metrics["test_sets"].items()}}
        print(f"road: trained {name}", file=sys.stderr, flush=True)
    results = in_models_order(results)
    try:
        fusion = engine.run(RunConfig(mode="fusion", model_size="student", **base)).metrics
    except KdcoreError as error:
        return {**results, "skipped": {"fusion_students": str(error)}}
    results["fusion_students"] = {"test_sets": {test: figures(m) for test, m in fusion["test_sets"].items()}}
    return results


def unknown_vehicles(row: dict) -> list[str]:
    """The vehicles a model's row of the vehicles part was calibrated on and tested."""
    return [vehicle for vehicle in row if vehicle != "known_vehicle"]


def headline(vehicles: dict | None, road: dict | None) -> dict:
    keys = {}
    if vehicles:
        rows = [(model, vehicle, row[vehicle]) for model, row in vehicles["models"].items() for vehicle in unknown_vehicles(row)]
        keys["transfer_min_auroc_before"] = min(stats["before"]["auroc"] for *_, stats in rows)
        keys["transfer_min_f1_after"] = min(stats["after"]["f1"] for *_, stats in rows)
        keys["transfer_max_fpr_after"] = max(stats["after"]["fpr"] for *_, stats in rows)
        keys["calibration_seconds_max"] = max(stats["calibration_seconds"] for *_, stats in rows)
        # how alerts name the attacked ID (top-1) on the attacks that forge one ID (fuzzing forges many),
        # and how often they name the attack trained on (replay was not)
        alerts = []
        for row in vehicles["models"].values():
            sets = [row["known_vehicle"]["test_sets"], *(row[vehicle]["after"]["test_sets"] for vehicle in unknown_vehicles(row))]
            alerts += [(name, set_figures.get("alerts", {})) for each in sets for name, set_figures in each.items()]
        forging_one = [figures for name, figures in alerts if "fuzzy" not in name]
        trained_on = [figures for _, figures in alerts if figures.get("class_accuracy") is not None]  # replay has no class
        never_trained_on = [figures for _, figures in alerts if figures.get("unseen_as_unknown") is not None]
        for key, share, group in (("localisation_min_top1", "top1", forging_one), ("class_accuracy_min", "class_accuracy", trained_on),
                                  ("unseen_as_unknown_min", "unseen_as_unknown", never_trained_on),
                                  ("incident_localisation_min_top1", "incident_top1", forging_one),
                                  ("incident_class_accuracy_min", "incident_class_accuracy", trained_on)):
            present = [figures[share] for figures in group if figures.get(share) is not None]
            keys[key] = min(present) if present else None
        delays = [figures["delay_windows"] for _, figures in alerts if figures.get("delay_windows") is not None]
        keys["incident_delay_windows_max"] = max(delays) if delays else None  # the slowest set's median time-to-detect
    if road and "gat_teacher" in road:
        gat_sets = [(test, m["f1"]) for name in ("gat_teacher", "gat_student_kd") for test, m in road[name]["test_sets"].items()]
        keys["road_min_f1_gat"] = min(f1 for _, f1 in gat_sets)
        keys["road_min_f1_gat_trained_signals"] = min(f1 for test, f1 in gat_sets if test != "test_held_out")
    return {**keys, **students_and_fusion(vehicles, road)}


def students_and_fusion(vehicles: dict | None, road: dict | None) -> dict:
    """How many test sets the KD students fall short of their teacher (or plain student) on, and
    fusion of its better input, each of how many: issue #14 asks for none."""
    points = {name: set_points(vehicles, road, name) for name in [*(name for name, *_ in MODELS), "fusion_students"]}
    short = [name for family in ("gat", "vgae") for name, kd in points[f"{family}_student_kd"].items()
             if kd < points[f"{family}_teacher"][name] - 1 or kd < points[f"{family}_student"][name]]
    fused = points["fusion_students"]
    below = [name for name, score in fused.items() if score < max(points["gat_student_kd"][name], points["vgae_student_kd"][name])]
    return {"kd_sets_short_of_teacher": len(short), "kd_sets_compared": len(points["gat_student_kd"]) + len(points["vgae_student_kd"]),
            "fusion_sets_below_better_input": len(below), "fusion_sets_compared": len(fused)}


def set_points(vehicles: dict | None, road: dict | None, model: str) -> dict[str, int]:
    """``model``'s F1 in points (two decimals) on every test set: the training vehicle's, the
    unknown vehicles' after calibration, ROAD's; none for a model not run (fusion skipped)."""
    f1s = {}
    row = (vehicles or {}).get("models", {}).get(model)
    if row:
        parts = {"known_vehicle": row["known_vehicle"], **{vehicle: row[vehicle]["after"] for vehicle in unknown_vehicles(row)}}
        f1s.update({f"{part}/{name}": m["f1"] for part, stats in parts.items() for name, m in stats["test_sets"].items()})
    if road and model in road:
        f1s.update({f"road/{name}": m["f1"] for name, m in road[model]["test_sets"].items()})
    return {name: round(100 * f1) for name, f1 in f1s.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared")
    parser.add_argument("--representation", nargs="+", default=["agnostic"])
    parser.add_argument("--part", nargs="+", default=["vehicles", "road"], choices=["vehicles", "road"])
    parser.add_argument("--train-vehicle", default="camaro", choices=TRAIN_VEHICLES, help="the vehicle the models train on")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--gat-mode", default="normal", choices=GAT_MODES, help="the GATs' training mode (make demo trains curriculum)")
    parser.add_argument("--kd-noise", type=float, default=0.0, help="the KD students' kd_noise (docs/config.md)")
    parser.add_argument("--train-stride", type=int, default=None, help="every model's train_window_stride (docs/config.md)")
    parser.add_argument("--synthetic-attacks", type=float, default=0.0, help="every supervised model's synthetic_attacks (docs/config.md)")
    parser.add_argument("--work", type=Path, default=None, help="keep data and models here (default: a temporary folder)")
    args = parser.parse_args()
    if not (args.shared / "data/real/vehicles").is_dir():
        print(json.dumps({"skipped": f"no real captures at {args.shared / 'data/real'}"}))
        return
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        output: dict = {"protocol": {"train_vehicle": args.train_vehicle,
                                     "other_vehicles": [vehicle for vehicle in VEHICLES if vehicle != args.train_vehicle],
                                     "road_held_out": ROAD_HELD_OUT, "epochs": args.epochs, "seed": args.seed, "gat_mode": args.gat_mode,
                                     "kd_noise": args.kd_noise, "train_window_stride": args.train_stride,
                                     "synthetic_attacks": args.synthetic_attacks}}
        training = {"max_epochs": args.epochs, "seed": args.seed, "kd_noise": args.kd_noise, "train_window_stride": args.train_stride,
                    "synthetic_attacks": args.synthetic_attacks}
        for representation in args.representation:
            part = {}
            if "vehicles" in args.part:
                part["vehicles"] = vehicles_part(args.shared, work, representation, training, args.gat_mode, args.train_vehicle)
            if "road" in args.part:
                part["road"] = road_part(args.shared, work, representation, training, args.gat_mode)
            output[representation] = part
        first = output[args.representation[0]]
        print(json.dumps({**headline(first.get("vehicles"), first.get("road")), **output}, indent=2))


if __name__ == "__main__":
    main()
