"""``kdcore pipeline``: the study as a DAG that skips complete stages and stops only the dependants of a failure."""

import attrs
import pytest
from typer.testing import CliRunner

from kdcore.cli import app
from kdcore.pipeline import Pipeline, Stage, study_stages

from conftest import tiny_config

TRAINING_STAGES = ("vgae-teacher", "gat-teacher", "gat-student", "gat-student-kd")


def tiny_study(root):
    stages = study_stages(tiny_config(root, max_epochs=2), ["tiny"])
    return [s for s in stages if s.name.split("/")[-1] in TRAINING_STAGES]


def test_stages_come_in_dependency_order(tmp_path):
    stages = study_stages(tiny_config(tmp_path), ["tiny", "other"])
    seen = set()
    for stage in stages:
        assert set(stage.needs) <= seen, stage.name
        seen.add(stage.name)
    assert stages[-1].name == "report" and len(stages) == 17
    kd = next(s for s in stages if s.name == "tiny/gat-student-kd")
    assert kd.config.use_knowledge_distillation and kd.config.model_size == "student" and kd.config.mode == "curriculum"
    fusion = next(s for s in stages if s.name == "other/fusion-students")
    assert fusion.needs == ("other/vgae-student-kd", "other/gat-student-kd")


def test_a_complete_study_is_not_trained_twice(engine, tmp_path):
    pipeline = Pipeline(engine, tiny_study(tmp_path), tmp_path)
    assert [r.status for r in pipeline.dry_run()] == ["planned"] * 4
    first = pipeline.run()
    assert [r.status for r in first] == ["done"] * 4, [r.detail for r in first]
    checkpoints = {r.stage.name: engine.layout_for(r.stage.config).checkpoint.stat().st_mtime_ns for r in first}

    second = pipeline.run()
    assert [r.status for r in second] == ["skipped (complete)"] * 4
    assert {r.stage.name: engine.layout_for(r.stage.config).checkpoint.stat().st_mtime_ns for r in second} == checkpoints
    assert [r.status for r in pipeline.dry_run()] == ["complete"] * 4


def test_an_interrupted_stage_resumes_and_the_rest_is_skipped(engine, tmp_path):
    stages = tiny_study(tmp_path)
    pipeline = Pipeline(engine, stages, tmp_path)
    pipeline.run()
    interrupted = engine.layout_for(stages[1].config)
    interrupted.metrics.unlink()  # killed after its last epoch, before its metrics were written
    assert (interrupted.root / "checkpoints" / "last.ckpt").is_file()

    results = pipeline.run()
    assert [r.status for r in results] == ["skipped (complete)", "done", "skipped (complete)", "skipped (complete)"]
    assert interrupted.is_complete()


def test_a_stage_an_older_version_wrote_otherwise_runs_again(engine, tmp_path):
    import torch

    from kdcore.checkpoint import load_checkpoint, save_checkpoint
    from kdcore.plugins.modes.autoencoder import SCORE

    stages = tiny_study(tmp_path)[:2]  # the VGAE teacher, and the curriculum GAT it guides
    pipeline = Pipeline(engine, stages, tmp_path)
    pipeline.run()
    vgae = engine.layout_for(stages[0].config)
    old = load_checkpoint(vgae.checkpoint)  # as the version before the error scale wrote it
    save_checkpoint(vgae.checkpoint, attrs.evolve(
        old, state_dict={k: v for k, v in old.state_dict.items() if k != "error_scale"}, extra={**old.extra, "score": "feature-error"}))
    last = vgae.root / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    del state["state_dict"]["model.error_scale"]
    torch.save(state, last)
    assert [r.status for r in pipeline.dry_run()] == ["planned", "complete"]

    results = pipeline.run()
    assert [r.status for r in results] == ["done", "skipped (complete)"], [r.detail for r in results]
    again = load_checkpoint(vgae.checkpoint)
    assert again.extra["score"] == SCORE and not torch.equal(again.state_dict["error_scale"], torch.ones_like(again.state_dict["error_scale"]))
    assert all(torch.equal(again.state_dict[k], v) for k, v in old.state_dict.items() if k != "error_scale"), "resumed, not retrained"


def test_a_failure_blocks_only_its_dependants(engine, tmp_path):
    good = tiny_config(tmp_path, mode="normal", max_steps=1)
    stages = [
        Stage("broken", attrs.evolve(good, mode="curriculum")),  # no VGAE to guide it: fails in check()
        Stage("after-broken", attrs.evolve(good, model_size="student", use_knowledge_distillation=True), ("broken",)),
        Stage("independent", good),
        Stage("report", None, ("broken", "after-broken", "independent")),
    ]
    results = {r.stage.name: r for r in Pipeline(engine, stages, tmp_path).run()}
    assert results["broken"].status == "failed" and "needs a trained VGAE" in results["broken"].detail
    assert results["after-broken"].status == "blocked" and results["after-broken"].detail == "needs broken"
    assert results["independent"].status == "done"
    assert results["report"].status == "done" and (tmp_path / "report" / "report.md").is_file()


def test_stages_out_of_order_are_refused(engine, tmp_path):
    from kdcore.errors import KdcoreError

    with pytest.raises(KdcoreError, match="needs a, which do not come before it"):
        Pipeline(engine, [Stage("b", tiny_config(tmp_path), ("a",)), Stage("a", tiny_config(tmp_path))], tmp_path)


def test_pipeline_dry_run_command(tmp_path):
    result = CliRunner().invoke(app, ["pipeline", "--dry-run", "--experiment-root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[1] == "synthetic/vgae-teacher" and lines[-1].split()[1] == "report"
    assert all("planned" in line for line in lines)
    assert not (tmp_path / "automotive").exists()


def test_a_student_distilled_with_another_strategy_is_trained_again_from_the_start(engine, tmp_path):
    """A ``with-kd`` folder filled under an earlier default strategy is neither kept nor resumed."""
    import torch

    from kdcore.checkpoint import load_checkpoint, save_checkpoint

    stages = [s for s in tiny_study(tmp_path) if s.name.split("/")[-1] in ("vgae-teacher", "gat-teacher", "gat-student-kd")]
    pipeline = Pipeline(engine, stages, tmp_path)
    pipeline.run()
    student = engine.layout_for(stages[-1].config)
    now = load_checkpoint(student.checkpoint)
    assert now.config["distillation_strategy"] == "gat-attribution"
    save_checkpoint(student.checkpoint, attrs.evolve(now, config={**now.config, "distillation_strategy": "gat-softlabel"}))
    last = student.root / "checkpoints" / "last.ckpt"
    marked = torch.load(last, weights_only=False)
    marked["epoch"] = 10_000  # resuming from it would train no further epoch
    torch.save(marked, last)
    assert [r.status for r in pipeline.dry_run()] == ["complete", "complete", "planned"]

    results = pipeline.run()
    assert [r.status for r in results] == ["skipped (complete)", "skipped (complete)", "done"], [r.detail for r in results]
    again = load_checkpoint(student.checkpoint)
    assert again.config["distillation_strategy"] == "gat-attribution"
    assert torch.load(last, weights_only=False)["epoch"] < 10_000, "trained from the start, not resumed"
