"""The KD refactor plan's two test scenarios (Implementation Order 7 and 8), end to end on ``hcrl_sa``.

7. VGAE student + ``autoencoder`` mode + KD from the VGAE teacher;
8. GAT student + ``curriculum`` mode + KD from the GAT teacher.

Every run goes through the real ``kdcore`` command (a ``python -m kdcore run`` process), with
the teacher found in the artifact layout (no ``--teacher``). The dataset is built in the
can-train-and-test layout under tmp_path:

- with ``../shared/data/real`` present, from real attack-free candump captures of one vehicle
  (camaro): one converted to ctt CSV for ``train_01_attack_free/``, six others with DoS, fuzzing
  or spoofing injected by ``kdcore data inject`` for ``train_02_with_attacks/`` and
  ``test_0N_<attack>/`` (~110 k frames in all);
- without it, from the synthetic generator (``write_ctt_dataset``, ~90 k frames).

``KDCORE_SCENARIO_SOURCE=synthetic`` (or ``real``) forces the source. The whole module takes
~30–40 s on two CPU cores.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdcore.cli import app
from kdcore.data.formats import read_capture
from kdcore.data.formats.writers import write_csv
from kdcore.data.traffic import write_ctt_dataset

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
CAMARO = REAL / "vehicles" / "camaro"
SOURCE = os.environ.get("KDCORE_SCENARIO_SOURCE") or ("real" if REAL.is_dir() else "synthetic")

DATASET = "hcrl_sa"
EPOCHS = 5
ALPHA = 0.7  # RunConfig.distillation_alpha's default: loss = alpha * kd + (1 - alpha) * task

# Real camaro captures (vehicles/COUNTS.tsv: frames, 66 IDs each, all key-on/engine-on traffic).
REAL_ATTACK_FREE = ("hudcontrol.log",)  # 25.6 k frames
REAL_INJECTED = (  # (folder, capture, attack): 6 different recordings of the same car
    ("train_02_with_attacks", "keyoff.log", "dos"),  # 11.6 k
    ("train_02_with_attacks", "turnwheel.log", "fuzzy"),  # 9.7 k
    ("train_02_with_attacks", "hotlog.log", "spoof"),  # 6.5 k
    ("test_01_dos", "keyonlog.log", "dos"),  # 4.8 k
    ("test_02_fuzzy", "reverse.log", "fuzzy"),  # 18.1 k
    ("test_03_spoof", "tcstate.log", "spoof"),  # 17.4 k
)

VGAE_TEACHER = "unsupervised/vgae/teacher/no-kd/autoencoder"
VGAE_STUDENT = "unsupervised/vgae/student/with-kd/autoencoder"
GAT_TEACHER = "supervised/gat/teacher/no-kd/curriculum"
GAT_STUDENT = "supervised/gat/student/with-kd/curriculum"


# ----------------------------------------------------------------------------- helpers


def kdcore(*args: str) -> subprocess.CompletedProcess:
    # One intra-op thread unless the caller says otherwise: these graphs are small, and on a busy
    # two-core machine torch's default threads spin against other processes (2-10x slower).
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run([sys.executable, "-m", "kdcore", *args], capture_output=True, text=True, timeout=300, env=env)


def kdcore_run(data: Path, root: Path, *args: str) -> dict:
    """``kdcore run ... --json`` on hcrl_sa; the printed result (run_dir, checkpoint, metrics.json keys)."""
    result = kdcore(
        "run", "--dataset", DATASET, "--data-root", str(data), "--experiment-root", str(root),
        "--set", f"max_epochs={EPOCHS}", "--set", "progress_bar=false", "--json", *args,
    )
    assert result.returncode == 0, f"kdcore run {' '.join(args)} failed:\n{result.stderr[-4000:]}"
    return json.loads(result.stdout)


def overall(metrics: dict) -> dict:
    """The metrics over all test sets: under ``test`` (docs/artifacts.md) or at the top level."""
    return metrics["test"] if isinstance(metrics.get("test"), dict) else metrics


def run_dir(root: Path, relative: str) -> Path:
    return root / "automotive" / DATASET / relative


def assert_artifacts(directory: Path, model: str, mode: str) -> tuple[dict, dict]:
    """The plan's files are in the run folder; returns (metrics.json, config.toml)."""
    checkpoint = directory / "models" / f"{model}_{mode}.pth"
    for path in (checkpoint, directory / "metrics.json", directory / "config.toml", directory / "logs" / "metrics.csv"):
        assert path.is_file(), f"missing {path}"
    assert checkpoint.stat().st_size > 0
    metrics = json.loads((directory / "metrics.json").read_text())
    config = tomllib.loads((directory / "config.toml").read_text())
    assert (metrics["mode"], metrics["model"], metrics["dataset"]) == (mode, model, DATASET)
    assert config["mode"] == mode and config["dataset"] == DATASET
    return metrics, config


def assert_kd_student(printed: dict, student_dir: Path, teacher_checkpoint: Path, model: str, mode: str, strategy: str) -> dict:
    """The KD student's run: where ``kdcore run --json`` said, distilled with ``strategy`` from the
    teacher found in the layout (no --teacher was given); returns its metrics."""
    assert Path(printed["run_dir"]) == student_dir
    assert Path(printed["checkpoint"]) == student_dir / "models" / f"{model}_{mode}.pth"
    student, config = assert_artifacts(student_dir, model, mode)
    assert (student["model_size"], student["distillation"]) == ("student", "with-kd")
    assert student["strategy"] == strategy
    assert student["teacher"] == str(teacher_checkpoint)
    assert printed["teacher"] == student["teacher"] and printed["strategy"] == student["strategy"]
    assert config["use_knowledge_distillation"] is True
    assert config["teacher_model_path"] == str(teacher_checkpoint)
    assert config["distillation_strategy"] == strategy and config["model_size"] == "student"
    return student


def training_log(directory: Path) -> list[dict]:
    with (directory / "logs" / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def epoch_rows(rows: list[dict], column: str) -> list[dict]:
    """The rows that carry ``column`` (loss terms are logged once per epoch), values as floats."""
    return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in rows if row.get(column)]


def assert_kd_loss_decreased(rows: list[dict], terms: tuple[str, ...]) -> tuple[float, float]:
    """Every epoch has the KD loss and its terms, they add up, the epoch's mean loss is
    α·kd + (1-α)·task, and the KD loss of the last epoch is well below that of the first.
    Returns (first, last)."""
    for column in ("kd_loss", "task_loss", "train_loss", "train_loss_epoch", "epoch", "step", *terms):
        assert column in rows[0], f"logs/metrics.csv has no {column!r} column: {sorted(rows[0])}"
    epochs = epoch_rows(rows, "kd_loss")
    for row in epochs:
        values = [row["kd_loss"], row["task_loss"], row["train_loss_epoch"], *(row[t] for t in terms)]
        assert all(v is not None and math.isfinite(v) for v in values), row
        assert row["kd_loss"] == pytest.approx(sum(row[t] for t in terms), rel=1e-4, abs=1e-6)
        assert row["train_loss_epoch"] == pytest.approx(ALPHA * row["kd_loss"] + (1 - ALPHA) * row["task_loss"], rel=1e-4, abs=1e-6)
    assert sorted(int(row["epoch"]) for row in epochs) == list(range(EPOCHS)), f"expected {EPOCHS} epochs of training"
    assert epoch_rows(rows, "train_loss"), "no training steps logged"
    first, last = epochs[0]["kd_loss"], epochs[-1]["kd_loss"]
    assert last < 0.8 * first, f"KD loss did not decrease: first epoch {first:.4f}, last epoch {last:.4f}"
    return first, last


def assert_no_kd_logged(rows: list[dict]) -> None:
    assert epoch_rows(rows, "train_loss"), "no training steps logged"
    assert not epoch_rows(rows, "kd_loss"), "a no-KD teacher logged a kd_loss"


def summary(name: str, teacher: dict, student: dict, kd: tuple[float, float]) -> str:
    t, s = overall(teacher), overall(student)
    return (
        f"[{SOURCE}] {name}: teacher params {teacher['params']}, F1 {t['f1']:.4f}, AUROC {t['auroc']:.4f} | "
        f"student params {student['params']} ({student['params'] / teacher['params']:.1%} of the teacher), "
        f"F1 {s['f1']:.4f}, AUROC {s['auroc']:.4f} | kd_loss first epoch {kd[0]:.4f} → last {kd[1]:.4f}"
    )


# ----------------------------------------------------------------------------- the dataset


def build_from_real(out: Path, work: Path) -> None:
    missing = [name for name in (*REAL_ATTACK_FREE, *(c for _, c, _ in REAL_INJECTED)) if not (CAMARO / name).is_file()]
    assert not missing, f"{CAMARO} lacks {missing}"
    for name in REAL_ATTACK_FREE:
        table = read_capture(CAMARO / name)
        assert table.attack_rows == 0
        write_csv(table, out / "train_01_attack_free" / f"{Path(name).stem}.csv")
    runner = CliRunner()
    for seed, (folder, capture, attack) in enumerate(REAL_INJECTED):
        scratch = work / f"inject-{seed}"
        result = runner.invoke(app, ["data", "inject", str(CAMARO / capture), "--attack", attack, "--out", str(scratch), "--seed", str(seed)])
        assert result.exit_code == 0, result.output
        written = scratch / f"test_01_{attack}" / f"{attack}-{Path(capture).stem}.csv"
        assert written.is_file(), result.output
        (out / folder).mkdir(parents=True, exist_ok=True)
        shutil.move(written, out / folder / written.name)  # the name starts with the attack, as train_* files must


def build_synthetic(out: Path) -> None:
    write_ctt_dataset(out, seconds_train=14.0, seconds_attack=5.0, seconds_test=5.0, seed=3)


@pytest.fixture(scope="module")
def hcrl_sa(tmp_path_factory) -> Path:
    if SOURCE not in ("real", "synthetic"):
        pytest.fail(f"KDCORE_SCENARIO_SOURCE must be 'real' or 'synthetic', got {SOURCE!r}")
    if SOURCE == "real" and not REAL.is_dir():
        pytest.fail(f"KDCORE_SCENARIO_SOURCE=real but {REAL} does not exist")
    base = tmp_path_factory.mktemp("scenario-data")
    data = base / DATASET
    if SOURCE == "real":
        build_from_real(data, base)
    else:
        build_synthetic(data)
    return data


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, hcrl_sa) -> dict:
    """An experiment root holding the VGAE teacher both scenarios need (``--mode autoencoder``)."""
    root = tmp_path_factory.mktemp("scenario-experiments")
    result = kdcore_run(hcrl_sa, root, "--mode", "autoencoder")
    return {"root": root, "data": hcrl_sa, "vgae_teacher": result}


# ----------------------------------------------------------------------------- tests


def test_dataset_is_hcrl_sa_in_the_ctt_layout_with_all_three_attacks(hcrl_sa):
    folders = sorted(p.name for p in hcrl_sa.iterdir())
    assert folders == ["test_01_dos", "test_02_fuzzy", "test_03_spoof", "train_01_attack_free", "train_02_with_attacks"]
    result = CliRunner().invoke(app, ["data", "inspect", str(hcrl_sa), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["format"] == "ctt" and info["bad_rows"] == 0
    assert 50_000 <= info["rows"] <= 130_000, info["rows"]  # small enough for a quick test, big enough to learn
    assert {"dos", "fuzzy", "spoof"} <= set(info["attack_rows_by_type"]), info["attack_rows_by_type"]
    assert 0 < info["attack_rows"] < 0.3 * info["rows"]
    for csv_file in (hcrl_sa / "train_01_attack_free").glob("*.csv"):
        assert read_capture(csv_file).attack_rows == 0


def test_scenario_7_vgae_student_autoencoder_with_kd(experiment):
    """``--mode autoencoder`` teacher, then ``--mode autoencoder --model-size student
    --distillation with-kd`` with the teacher found in the layout."""
    root, data = experiment["root"], experiment["data"]
    teacher_dir, student_dir = run_dir(root, VGAE_TEACHER), run_dir(root, VGAE_STUDENT)
    teacher_checkpoint = teacher_dir / "models" / "vgae_autoencoder.pth"

    assert Path(experiment["vgae_teacher"]["run_dir"]) == teacher_dir
    teacher, _ = assert_artifacts(teacher_dir, "vgae", "autoencoder")
    assert (teacher["model_size"], teacher["distillation"], teacher["strategy"], teacher["teacher"]) == ("teacher", "no-kd", None, None)
    assert_no_kd_logged(training_log(teacher_dir))

    printed = kdcore_run(data, root, "--mode", "autoencoder", "--model-size", "student", "--distillation", "with-kd")
    student = assert_kd_student(printed, student_dir, teacher_checkpoint, "vgae", "autoencoder", "vgae-dual-signal")

    kd = assert_kd_loss_decreased(training_log(student_dir), ("kd_latent_loss", "kd_recon_loss"))

    assert student["params"] <= 0.10 * teacher["params"], (student["params"], teacher["params"])
    for metrics in (teacher, student):
        assert math.isfinite(overall(metrics)["auroc"])
        assert overall(metrics)["f1"] > 0.5, overall(metrics)
    print("\n" + summary("scenario 7 (VGAE, autoencoder)", teacher, student, kd))


def test_scenario_8_gat_student_curriculum_with_kd(experiment):
    """``--mode autoencoder`` (the VGAE the curriculum needs, from the fixture), ``--mode
    curriculum`` (GAT teacher), then ``--mode curriculum --model-size student --kd gat-attribution``
    (the mode's default strategy, so its run folder is the plan's ``with-kd``)."""
    root, data = experiment["root"], experiment["data"]
    teacher_dir, student_dir = run_dir(root, GAT_TEACHER), run_dir(root, GAT_STUDENT)
    teacher_checkpoint = teacher_dir / "models" / "gat_curriculum.pth"
    assert (run_dir(root, VGAE_TEACHER) / "models" / "vgae_autoencoder.pth").is_file()

    printed_teacher = kdcore_run(data, root, "--mode", "curriculum")
    assert Path(printed_teacher["run_dir"]) == teacher_dir
    teacher, _ = assert_artifacts(teacher_dir, "gat", "curriculum")
    assert (teacher["model_size"], teacher["distillation"], teacher["strategy"], teacher["teacher"]) == ("teacher", "no-kd", None, None)
    assert_no_kd_logged(training_log(teacher_dir))

    printed = kdcore_run(data, root, "--mode", "curriculum", "--model-size", "student", "--kd", "gat-attribution")
    student = assert_kd_student(printed, student_dir, teacher_checkpoint, "gat", "curriculum", "gat-attribution")

    kd = assert_kd_loss_decreased(training_log(student_dir), ("kd_softlabel_loss", "kd_attribution_loss"))

    assert student["params"] <= 0.10 * teacher["params"], (student["params"], teacher["params"])
    for metrics in (teacher, student):
        assert math.isfinite(overall(metrics)["auroc"])
        assert overall(metrics)["f1"] > 0.5, overall(metrics)
    print("\n" + summary("scenario 8 (GAT, curriculum)", teacher, student, kd))


def test_detect_replays_held_out_captures_as_the_evaluation_scored_them(experiment):
    """``kdcore detect`` on a held-out attack capture raises exactly the alerts the evaluation
    counted for that test set (same windows, same code path); on an attack-free recording of the
    same car its false-alert rate stays within the test FPR or 5 % (plus one window)."""
    root, data = experiment["root"], experiment["data"]
    student_dir = run_dir(root, GAT_STUDENT)
    if not (student_dir / "metrics.json").is_file():  # this test alone: train what scenario 8 trains
        kdcore_run(data, root, "--mode", "curriculum")
        kdcore_run(data, root, "--mode", "curriculum", "--model-size", "student", "--kd", "gat-attribution")
    metrics = json.loads((student_dir / "metrics.json").read_text())
    model = student_dir / "models" / "gat_curriculum.pth"

    test_set = sorted(p for p in data.iterdir() if p.name.startswith("test_"))[0]
    (capture,) = sorted(test_set.glob("*.csv"))
    result = kdcore("detect", "--model", str(model), "--replay", str(capture), "--as-fast-as-possible", "--verbose")
    assert result.returncode == 0, result.stderr
    alerts = [event for event in map(json.loads, result.stdout.splitlines()) if event["event_type"] == "window"]
    (tn, fp), (fn, tp) = metrics["test_sets"][test_set.name]["confusion_matrix"]
    assert len(alerts) == tp + fp

    if SOURCE == "real":
        normal = kdcore("detect", "--model", str(model), "--replay", str(CAMARO / "engineon.log"), "--as-fast-as-possible")
        summary = json.loads(normal.stderr.strip().splitlines()[-1])["summary"]
        # another recording of the car than the test sets: within their FPR, or 5 %, plus one window
        assert summary["alert_windows"] <= max(metrics["fpr"], 0.05) * summary["windows"] + 1, summary
