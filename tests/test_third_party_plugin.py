"""plugins/kdcore-dkd installed the way an outsider would, found through its entry point, trained with."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """``pip install plugins/kdcore-dkd`` into a folder put on the path of kdcore processes."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(REPO / "plugins" / "kdcore-dkd")],
        check=True, capture_output=True, text=True, timeout=300,
    )
    return target


def kdcore(site, *args, **env):
    environment = {**os.environ, "PYTHONPATH": str(site), **env}
    return subprocess.run([sys.executable, "-m", "kdcore", *args], capture_output=True, text=True,
                          env=environment, timeout=600)


def test_installed_plugin_is_listed(site):
    description = json.loads(kdcore(site, "plugins", "--json").stdout)
    assert {"name": "dkd", "distribution": "kdcore-dkd", "version": "0.1.0"} in description["plugins"]
    assert {"name": "dkd", "requires": ["logits"], "plugin": "dkd"} in description["strategies"]


def test_blocked_plugin_is_not_loaded(site):
    description = json.loads(kdcore(site, "plugins", "--json", KDCORE_DISABLE_PLUGINS="dkd").stdout)
    assert "dkd" not in {s["name"] for s in description["strategies"]}


def test_a_student_trains_with_the_plugins_strategy(site, tmp_path):
    common = ["--experiment-root", str(tmp_path), "--set", "max_steps=3", "--set", "progress_bar=false"]
    teacher = kdcore(site, "run", "--mode", "normal", *common)
    assert teacher.returncode == 0, teacher.stderr
    student = kdcore(site, "run", "--mode", "normal", "--model-size", "student", "--kd", "dkd", *common, "--json")
    assert student.returncode == 0, student.stderr
    result = json.loads(student.stdout)
    assert (result["strategy"], result["distillation"]) == ("dkd", "with-kd")
    logged = (Path(result["run_dir"]) / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"kd_tckd_loss", "kd_nckd_loss", "kd_loss"} <= set(logged)


def test_the_plugins_strategy_is_refused_where_outputs_are_missing(site, tmp_path):
    refused = kdcore(site, "run", "--mode", "autoencoder", "--kd", "dkd", "--experiment-root", str(tmp_path))
    assert refused.returncode == 2
    assert "strategy 'dkd' needs outputs logits that mode 'autoencoder' does not provide" in refused.stderr
