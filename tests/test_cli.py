"""The CLI as a user runs it: a real ``kdcore`` process, one-line errors, exit code 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdcore.cli import app
from kdcore.plugins.validation import FUSION_KD_MESSAGE


def kdcore(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "kdcore", *args],
        capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=300,
    )


def test_plugins_json_lists_builtin_modes_and_strategies():
    result = kdcore("plugins", "--json")
    assert result.returncode == 0, result.stderr
    description = json.loads(result.stdout)
    modes = {mode["name"]: mode for mode in description["modes"]}
    assert {"normal", "autoencoder", "curriculum", "fusion"} <= set(modes)
    assert modes["fusion"]["kd_support"] == "forbidden"
    assert modes["normal"] == {
        "name": "normal", "kd_support": "optional", "provides": ["logits", "member_logits", "node_attribution"],
        "default_strategy": "gat-attribution", "plugin": "kdcore.plugins.modes.normal",
    }
    strategies = {s["name"]: s for s in description["strategies"]}
    assert strategies["vgae-dual-signal"]["requires"] == ["z", "recon"]
    assert strategies["gat-softlabel"]["requires"] == ["logits"]
    assert strategies["gat-attribution"]["requires"] == ["logits", "node_attribution"]
    assert all(set(p) == {"name", "distribution", "version"} for p in description["plugins"])


def test_fusion_with_kd_fails_before_reading_data(tmp_path):
    result = kdcore("run", "--mode", "fusion", "--distillation", "with-kd", "--dataset", "no-such-data",
                    "--experiment-root", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {FUSION_KD_MESSAGE}"
    assert "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--set", "max_epoch=1"], "error: unknown config key 'max_epoch' in the command line; did you mean 'max_epochs'?"),
        (["run", "--mode", "curiculum"], "error: unknown mode 'curiculum'; known: autoencoder, curriculum, fusion, normal; did you mean 'curriculum'?"),
        (["run", "--mode", "normal", "--kd", "gat-softlable"], "error: unknown strategy 'gat-softlable'"),
        (["run", "--set", "distillation_alpha=2"], "error: the command line: distillation_alpha must be in [0, 1], got 2.0"),
        (["run", "--kd", "gat-softlabel", "--distillation", "no-kd"], "error: --kd gat-softlabel contradicts --distillation no-kd"),
        (["run", "--teacher", "t.pth"], "error: a teacher is given but knowledge distillation is off"),
        (["run", "--mode", "normal", "--distillation", "with-kd", "--teacher", "missing.pth"], "error: Teacher model not found: missing.pth"),
        (["run", "--dataset", "nope"], "error: unknown dataset 'nope'"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*args, "--experiment-root", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr


def test_list_compat_shows_the_matrix():
    result = kdcore("list", "--compat", "--json")
    matrix = json.loads(result.stdout)
    assert matrix["fusion"]["gat-softlabel"] == FUSION_KD_MESSAGE
    assert matrix["curriculum"]["gat-softlabel"] is None
    table = kdcore("list", "--compat")
    assert table.returncode == 0
    assert "vgae-dual-signal" in table.stdout and "✗" in table.stdout and "✓" in table.stdout


def test_validate_checks_without_training(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f'mode = "autoencoder"\nexperiment_root = "{tmp_path}"\n')
    result = kdcore("validate", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "ok: mode autoencoder, model vgae (teacher), KD strategy none" in result.stdout
    assert not (tmp_path / "automotive").exists()

    config.write_text('mode = "fusion"\nuse_knowledge_distillation = true\n')
    refused = kdcore("validate", "--config", str(config))
    assert refused.returncode == 2 and FUSION_KD_MESSAGE in refused.stderr

    config.write_text('mode = "normal"\nmax_epohcs = 3\n')
    typo = kdcore("validate", "--config", str(config))
    assert typo.returncode == 2 and "did you mean 'max_epochs'" in typo.stderr and "run.toml" in typo.stderr


def test_run_trains_and_old_kd_mode_maps_with_a_warning(tmp_path):
    common = ["--experiment-root", str(tmp_path), "--set", "max_steps=2", "--set", "progress_bar=false"]
    teacher = kdcore("run", "--mode", "normal", *common, "--json")
    assert teacher.returncode == 0, teacher.stderr
    assert json.loads(teacher.stdout)["model_size"] == "teacher"

    student = kdcore("run", "--mode", "knowledge_distillation", *common, "--json")
    assert student.returncode == 0, student.stderr
    assert "--mode knowledge_distillation is deprecated" in student.stderr
    result = json.loads(student.stdout)
    assert (result["mode"], result["model_size"], result["distillation"], result["strategy"]) == (
        "normal", "student", "with-kd", "gat-attribution"
    )
    assert result["teacher"].endswith("supervised/gat/teacher/no-kd/normal/models/gat_normal.pth")


def test_old_kd_mode_takes_the_model_from_the_config_file(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f'model = "vgae"\nexperiment_root = "{tmp_path}"\n')
    result = CliRunner().invoke(app, ["run", "--mode", "knowledge_distillation", "--config", str(config)])
    assert result.exit_code == 2
    assert "no teacher found at" in result.stderr and "vgae_autoencoder.pth" in result.stderr


def test_plugins_passed_in_are_not_claimed_by_kdcore():
    from kdcore import Engine, hookimpl

    class Local:
        @hookimpl
        def kdcore_register_models(self, register):
            pass

    description = Engine(plugins=[Local(), Local()], load_entry_points=False).describe()
    local = [p for p in description["plugins"] if "Local" in p["name"]]
    assert len(local) == 2 and all(p["distribution"] is None for p in local)


def test_report_lists_every_complete_run(teacher_root):
    result = CliRunner().invoke(app, ["report", "--experiment-root", str(teacher_root), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {(r["model"], r["mode"], r["model_size"]) for r in rows} >= {
        ("vgae", "autoencoder", "teacher"), ("gat", "normal", "teacher"), ("gat", "curriculum", "teacher")
    }
    for row in rows:
        written = json.loads((Path(row["run_dir"]) / "metrics.json").read_text())
        assert (row["f1"], row["params"]) == (written["f1"], written["params"])
    table = CliRunner().invoke(app, ["report", "--experiment-root", str(teacher_root)])
    assert "vgae" in table.stdout and "curriculum" in table.stdout
    missing = CliRunner().invoke(app, ["report", "--experiment-root", str(teacher_root / "nowhere")])
    assert missing.exit_code == 2 and "experiment root not found" in missing.stderr
