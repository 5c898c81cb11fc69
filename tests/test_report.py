"""``kdcore report`` reads only artifacts: its numbers are the metrics.json numbers; its plots are PNGs."""

import csv
import json

from typer.testing import CliRunner

from kdcore.cli import app
from kdcore.report import collect_runs, write_report

from conftest import tiny_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_tables_and_plots(engine, teacher_root, tmp_path):
    engine.run(tiny_config(teacher_root, mode="curriculum", model_size="student", max_epochs=2))
    engine.run(tiny_config(teacher_root, mode="curriculum", model_size="student", max_epochs=2, use_knowledge_distillation=True))
    report = write_report(teacher_root, tmp_path / "report")
    text = report.read_text()

    rows = json.loads((tmp_path / "report" / "runs.json").read_text())
    for row in rows:
        written = json.loads((teacher_root / row["run_dir"] / "metrics.json").read_text())
        for key in ("f1", "auroc", "fpr", "params", "checkpoint_bytes", "per_attack_recall"):
            assert row[key] == written[key], key
    kd_student = next(r for r in rows if r["kd"] == "gat-attribution" and r["mode"] == "curriculum")
    plain_student = next(r for r in rows if r["kd"] == "-" and r["model_size"] == "student" and r["mode"] == "curriculum")
    assert kd_student["kd_gain_f1"] == kd_student["f1"] - plain_student["f1"]
    assert len(list(csv.DictReader(open(tmp_path / "report" / "runs.csv")))) == len(rows)

    # every test set of every run, with its own F1, FPR and AUROC
    assert "| run | test_01_dos | test_02_fuzzy |" in text
    written = json.loads((teacher_root / kd_student["run_dir"] / "metrics.json").read_text())["test_sets"]["test_02_fuzzy"]
    assert f"{written['f1']:.4f} · {written['fpr']:.4f} · {written['auroc']:.4f}" in text

    # how the alerts localise (per attack) and merge into incidents, from the same metrics.json
    overall = json.loads((teacher_root / kd_student["run_dir"] / "metrics.json").read_text())
    per_attack = overall["localisation"]["per_attack"]["dos"]
    assert "Localisation, top-1 · top-3" in text and f"{per_attack['top1']:.4f} · {per_attack['top3']:.4f}" in text
    assert "| run | bursts | found |" in text and f"| {overall['incidents']['bursts']:,} | {overall['incidents']['detected_bursts']:,} |" in text

    plots = sorted((tmp_path / "report" / "plots").glob("*.png"))
    assert {p.name for p in plots} >= {"tiny-gat-curves.png", "tiny-gat-scores.png", "tiny-gat-confusion.png", "tiny-gat-training.png",
                                       "tiny-gat-classes.png", "tiny-timeline.png"}
    for plot in plots:
        assert plot.read_bytes()[:8] == PNG_MAGIC
        assert f"plots/{plot.name}" in text


def test_report_command_prints_where_the_report_is(teacher_root, tmp_path):
    result = CliRunner().invoke(app, ["report", "--experiment-root", str(teacher_root), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert f"report: {tmp_path / 'r' / 'report.md'}" in result.stdout
    assert collect_runs(teacher_root)[0]["model_size"] == "teacher"
