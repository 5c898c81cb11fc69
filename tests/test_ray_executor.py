"""``kdcore pipeline --executor ray``: the same DAG as Ray tasks, independent stages at once."""

import fcntl
import functools
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import attrs
import pytest
from typer.testing import CliRunner

from kdcore import Engine
from kdcore.cli import app
from kdcore.errors import KdcoreError
from kdcore.pipeline import Pipeline, Stage
from kdcore.ray_executor import INSTALL_HINT, RayExecutor, import_ray, stage_resources

from conftest import TinyDatasetPlugin, tiny_config

ray = pytest.importorskip("ray", reason="the Ray executor needs the ray extra (installed by make test)")
tiny_engine = functools.partial(Engine, plugins=[TinyDatasetPlugin()], load_entry_points=False)


def _warm() -> int:
    import lightning  # noqa: F401 - each worker pays its imports here, not inside a timed stage

    time.sleep(0.5)
    return os.getpid()


@pytest.fixture(scope="module")
def local_ray():
    """A local 2-CPU Ray instance whose workers can import the tests' own dataset plugin."""
    tests = str(Path(__file__).parent)
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([tests, *sys.path])}})
    assert len(set(ray.get([ray.remote(_warm).remote() for _ in range(2)]))) == 2
    yield ray
    ray.shutdown()


def _metrics(engine, stage):
    return json.loads(engine.layout_for(stage.config).metrics.read_text())


def test_independent_stages_run_at_once_and_give_the_sequential_metrics(local_ray, engine, tmp_path):
    def study(root):
        base = tiny_config(root, max_epochs=3, early_stopping_patience=0)
        missing_teacher = attrs.evolve(base, mode="normal", model_size="student", use_knowledge_distillation=True,
                                       teacher_model_path=str(root / "no-such-teacher.pth"))
        return [
            Stage("vgae-teacher", attrs.evolve(base, mode="autoencoder")),
            Stage("gat-normal", attrs.evolve(base, mode="normal")),
            Stage("broken", missing_teacher),
            Stage("after-broken", attrs.evolve(base, mode="autoencoder", model_size="student"), ("broken",)),
        ]

    stages = study(tmp_path / "ray")
    submitted = []
    executor = RayExecutor(Pipeline(engine, stages, tmp_path / "ray"), engine_factory=tiny_engine)
    results = {r.stage.name: r for r in executor.run(on_start=lambda stage: submitted.append(stage.name))}
    assert sorted(submitted) == ["broken", "gat-normal", "vgae-teacher"], "a blocked stage is never handed to Ray"
    assert results["broken"].status == "failed" and "no-such-teacher.pth" in results["broken"].detail
    assert results["after-broken"].status == "blocked" and results["after-broken"].detail == "needs broken"
    vgae, gat = results["vgae-teacher"], results["gat-normal"]
    assert vgae.status == gat.status == "done", (vgae.detail, gat.detail)
    assert vgae.started < gat.finished and gat.started < vgae.finished, "the two independent stages did not overlap"

    sequential = study(tmp_path / "sequential")
    done_here = Pipeline(engine, sequential, tmp_path / "sequential").run()
    assert [r.status for r in done_here[:2]] == ["done", "done"], [r.detail for r in done_here]
    for on_ray, here in zip(stages[:2], sequential[:2]):
        ray_metrics, sequential_metrics = _metrics(engine, on_ray), _metrics(engine, here)
        for key in ("f1", "auroc", "fpr", "confusion_matrix", "test_sets", "localisation"):
            assert ray_metrics[key] == sequential_metrics[key], (on_ray.name, key)


def _held_lock_pid(run_dir: Path, timeout: float = 120.0) -> int:
    """The pid of the process training in ``run_dir``, once it holds the run's lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lock = run_dir / ".lock"
        if lock.is_file():
            with open(lock) as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(handle, fcntl.LOCK_UN)
                except BlockingIOError:
                    text = lock.read_text()
                    if text.startswith("pid "):
                        return int(text.split()[1])
        time.sleep(0.02)
    raise AssertionError(f"no run started in {run_dir}")


def _run_and_kill_first(engine, root, retries):
    base = tiny_config(root, max_epochs=40, early_stopping_patience=0)
    stages = [
        Stage("long", attrs.evolve(base, mode="autoencoder")),
        Stage("after-long", attrs.evolve(base, mode="autoencoder", model_size="student", use_knowledge_distillation=True), ("long",)),
    ]
    executor = RayExecutor(Pipeline(engine, stages, root), engine_factory=tiny_engine, retries=retries)
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(results=executor.run()))
    thread.start()
    run_dir = engine.layout_for(stages[0].config).root
    killed = _held_lock_pid(run_dir)
    os.kill(killed, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive()
    return {r.stage.name: r for r in outcome["results"]}, killed, run_dir


def test_a_task_killed_mid_run_is_retried_and_the_study_completes(local_ray, engine, tmp_path):
    results, killed, run_dir = _run_and_kill_first(engine, tmp_path, retries=1)
    assert [r.status for r in results.values()] == ["done", "done"], [r.detail for r in results.values()]
    assert (run_dir / ".lock").read_text() != f"pid {killed}"  # the second attempt, in another worker, finished it


def test_a_task_killed_past_its_retries_is_reported_and_blocks_its_dependants(local_ray, engine, tmp_path):
    results, _, _ = _run_and_kill_first(engine, tmp_path, retries=0)
    assert results["long"].status == "failed" and "worker died 1 times" in results["long"].detail
    assert results["after-long"].status == "blocked"


def test_a_stage_larger_than_the_cluster_fails_instead_of_waiting_forever(local_ray, engine, tmp_path):
    stages = [Stage("greedy", tiny_config(tmp_path, num_threads=4))]
    [result] = RayExecutor(Pipeline(engine, stages, tmp_path), engine_factory=tiny_engine).run()
    assert result.status == "failed" and result.detail == "needs 4 CPUs; the Ray cluster has 2"


def test_each_task_asks_for_what_its_run_uses(tmp_path):
    config = tiny_config(tmp_path, num_threads=2, num_workers=1, devices=2)
    assert stage_resources(config, cluster_gpus=0) == {"num_cpus": 3, "num_gpus": 0}
    assert stage_resources(config, cluster_gpus=4) == {"num_cpus": 3, "num_gpus": 2}  # accelerator auto picks the GPUs
    assert stage_resources(attrs.evolve(config, accelerator="cpu"), cluster_gpus=4)["num_gpus"] == 0
    assert stage_resources(attrs.evolve(config, num_threads=0), cluster_gpus=0)["num_cpus"] == 2


def test_multi_node_stages_are_refused(engine, tmp_path):
    with pytest.raises(KdcoreError, match="num_nodes=2"):
        RayExecutor(Pipeline(engine, [Stage("wide", tiny_config(tmp_path, num_nodes=2))], tmp_path))


def test_without_ray_the_executor_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(KdcoreError, match=r"pip install 'kdcore\[ray\]'"):
        import_ray()
    result = CliRunner().invoke(app, ["pipeline", "--executor", "ray", "--experiment-root", str(tmp_path)])
    assert result.exit_code == 2 and INSTALL_HINT in result.output
    assert not any(tmp_path.rglob("metrics.json"))


def test_a_ray_address_needs_the_ray_executor(tmp_path):
    result = CliRunner().invoke(app, ["pipeline", "--ray-address", "auto", "--experiment-root", str(tmp_path)])
    assert result.exit_code == 2 and "--ray-address needs --executor ray" in result.output


def _engine_in_worker(workers: Path) -> Engine:
    """``tiny_engine``, noting the worker process that made it."""
    workers.mkdir(exist_ok=True)
    (workers / str(os.getpid())).touch()
    return tiny_engine()


def test_tune_workers_as_ray_tasks_share_one_study(local_ray, engine, tmp_path):
    from kdcore.tune import default_space, prepare
    from kdcore.ray_executor import tune_on_ray

    base = prepare(engine, tiny_config(tmp_path, mode="normal", model_size="student", max_epochs=2))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    workers = tmp_path / "workers"
    study = tune_on_ray(base, default_space(base), 4, storage, "on-ray", workers=2,
                        engine_factory=functools.partial(_engine_in_worker, workers))
    trials = [t for t in study.trials if t.datetime_complete is not None]
    assert len(list(workers.iterdir())) == 2, "two worker processes searched the study"
    assert 4 <= len(trials) <= 5, "together they stop at the study's trials (a worker may finish the one it began)"
    assert len({t.params["learning_rate"] for t in trials}) == len(trials), "one study: no worker repeats another's trial"
