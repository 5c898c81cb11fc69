"""A run stopped by SIGTERM or Ctrl-C exits 128 + signal, leaves nothing that looks complete, and resumes."""

import signal
import subprocess
import sys
import time

import pytest
import torch


def run_args(data, experiment_root, max_epochs):
    return [
        sys.executable, "-m", "kdcore", "run", "--mode", "normal", "--dataset", "captures", "--data-root", str(data),
        "--experiment-root", str(experiment_root), "--set", f"max_epochs={max_epochs}", "--set", "early_stopping_patience=0",
        "--set", "progress_bar=false", "--set", "window_size=50", "--set", "window_stride=50",
    ]


def wait_for(pattern_root, pattern, process, timeout=180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(pattern_root.rglob(pattern))
        if found:
            return found[0]
        if process.poll() is not None:
            pytest.fail(f"kdcore run ended early: {process.communicate()[1][-2000:]}")
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"no {pattern} within {timeout} s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_run_is_incomplete_and_resumes(ctt_root, tmp_path, signum):
    experiment_root = tmp_path / "experiments"
    process = subprocess.Popen(run_args(ctt_root, experiment_root, 10_000), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = wait_for(experiment_root, "last.ckpt", process)  # at least one epoch trained
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 128 + signum
    assert stderr.strip().splitlines()[-1].startswith(f"stopped by {signal.Signals(signum).name}: ")
    run_dir = last.parent.parent
    assert not (run_dir / "metrics.json").exists()
    assert not (run_dir / "models").exists() or not any((run_dir / "models").iterdir())
    assert not list(experiment_root.rglob("*.tmp"))  # no half-written file left behind

    # Epochs go by fast: more than one may have ended before the signal arrived. Resume for one more.
    reached = torch.load(last, map_location="cpu", weights_only=True)["epoch"] + 1
    resumed = subprocess.run([*run_args(ctt_root, experiment_root, reached + 1), "--resume"], capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert (run_dir / "metrics.json").is_file()
