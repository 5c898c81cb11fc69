"""A study over several seeds: each seed in its own folder, mean ± std in the report, and KD's gain
tested against the seed-to-seed noise."""

import json

import pytest

from kdcore.pipeline import Pipeline, study_stages
from kdcore.report import collect_runs, write_report
from kdcore.seeds import across_seeds, kd_gains, sign_flip_p_value

from conftest import tiny_config

STAGES = ("gat-teacher", "gat-student", "gat-student-kd", "vgae-teacher")


def test_the_sign_flip_test_is_exact():
    assert sign_flip_p_value([0.1, 0.2, 0.15]) == 0.25  # only all + and all − are as extreme: 2 of 8
    assert sign_flip_p_value([0.02, 0.03, 0.01, 0.04, 0.05, 0.02]) == pytest.approx(2 / 64)
    assert sign_flip_p_value([0.1, -0.1]) == 1.0


def row(seed, size, kd, f1, **extra):
    return {"dataset": "d", "model": "gat", "model_size": size, "mode": "normal", "kd": kd, "seed": seed, "f1": f1, **extra}


def test_runs_differing_only_in_seed_are_summed_up_and_kd_gains_paired_by_seed():
    rows = [row(1, "student", "-", 0.90, test_sets={"t": {"f1": 0.8}}), row(2, "student", "-", 0.80, test_sets={"t": {"f1": 0.6}}),
            row(1, "student", "gat-softlabel", 0.95), row(2, "student", "gat-softlabel", 0.82), row(1, "teacher", "-", 0.99)]
    (plain, kd) = across_seeds(rows)  # the teacher has one seed: nothing to sum up
    assert plain["seeds"] == [1, 2] and plain["f1"]["mean"] == pytest.approx(0.85) and plain["f1"]["std"] == pytest.approx(0.0707, abs=1e-4)
    assert plain["test_sets"]["t"]["f1"]["mean"] == pytest.approx(0.7) and kd["test_sets"] == {}
    (gain,) = kd_gains(rows)
    assert gain["gains"] == pytest.approx([0.05, 0.02]) and gain["mean"] == pytest.approx(0.035)
    assert gain["p_value"] == 0.5 and not gain["exceeds_noise"]  # two seeds can never tell


def test_a_two_seed_study_runs_each_seed_in_its_folder_and_the_report_aggregates(engine, tmp_path):
    base = tiny_config(tmp_path, max_epochs=1, seeds=(1, 2))
    stages = [stage for stage in study_stages(base, ["tiny"]) if stage.name.split("/")[-1] in STAGES]
    assert [stage.name for stage in stages[:2]] == ["tiny/seed-1/vgae-teacher", "tiny/seed-1/gat-teacher"]
    results = Pipeline(engine, stages, tmp_path).run()
    assert [result.status for result in results] == ["done"] * 8, [result.detail for result in results]
    assert {stage.config.experiment_root for stage in stages} == {str(tmp_path / "seed-1"), str(tmp_path / "seed-2")}

    rows = collect_runs(tmp_path)
    assert sorted({r["seed"] for r in rows}) == [1, 2] and len(rows) == 8
    report = write_report(tmp_path, tmp_path / "report", rows)
    text = report.read_text()
    summary = json.loads((tmp_path / "report" / "seeds.json").read_text())
    teacher = next(s for s in summary["across_seeds"] if s["model"] == "gat" and s["model_size"] == "teacher")
    f1 = [r["f1"] for r in rows if r["model"] == "gat" and r["model_size"] == "teacher"]
    assert teacher["f1"]["mean"] == pytest.approx(sum(f1) / 2) and teacher["f1"]["n"] == 2
    assert f"{teacher['f1']['mean']:.4f} ± {teacher['f1']['std']:.4f}" in text
    (gain,) = summary["kd_gains"]
    assert gain["seeds"] == [1, 2] and "## Across seeds" in text and "seed 2" in text  # runs labelled by seed
