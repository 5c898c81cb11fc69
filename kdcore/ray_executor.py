"""``--executor ray``: the study's DAG, or a search's workers, as Ray tasks on this machine or a cluster.

``kdcore pipeline``: this process keeps the DAG. A stage is submitted once each of its needs has
a result, and is decided by ``Pipeline.decide`` exactly as the sequential executor decides it: a
complete stage is skipped, a stage whose need failed is blocked. Each task asks Ray for the CPUs and GPUs its run
uses. A task whose worker dies (killed, out of memory, its node lost) is retried by Ray; a stage
that raises is not — it would fail the same way again — and is reported failed. The report is
written here once every stage has a result.

``kdcore tune``: each worker is a Ray task taking trials of the one study in the shared storage,
as several ``kdcore tune`` processes would.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs

from kdcore.config import RunConfig
from kdcore.engine import Engine
from kdcore.errors import KdcoreError
from kdcore.pipeline import OnStage, Pipeline, Stage, StageResult, run_stage

RETRIES = 2  # attempts after the first, for a task whose worker died
INSTALL_HINT = "--executor ray needs Ray: pip install 'kdcore[ray]'"
PATH_KEYS = ("experiment_root", "data_root", "cache_dir", "teacher_model_path", "capture_layout", "batch_size_factors")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise KdcoreError(INSTALL_HINT) from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Ray, joined at ``address`` or started on this machine for the block (and stopped after);
    one already initialised by the caller is used as it is."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise KdcoreError(f"cannot start or join Ray at {address or 'this machine'}: {error}") from None
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


@contextlib.contextmanager
def cancelled_on_exit(ray: Any, refs: Iterable[Any]) -> Iterator[None]:
    """Stop the tasks still running when the block is left by an exception (Ctrl-C included)."""
    try:
        yield
    except BaseException:
        for ref in list(refs):
            ray.cancel(ref, force=True)
        raise


def stage_resources(config: RunConfig, cluster_gpus: float) -> dict[str, float]:
    """What one run occupies: its intra-op threads and data-loader workers, and the GPUs that
    Lightning will pick (Ray hides every GPU from a task that did not ask for one)."""
    wants_gpu = config.accelerator in ("gpu", "cuda") or (config.accelerator == "auto" and cluster_gpus > 0)
    return {"num_cpus": (config.num_threads or 1) + config.num_workers, "num_gpus": config.devices if wants_gpu else 0}


def unplaceable(resources: dict[str, float], capacity: dict[str, float]) -> str:
    """Why a task could never be placed (Ray would wait for it forever), or ''."""
    for key, name in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
        if resources[key] > capacity.get(name, 0):
            return f"needs {resources[key]:g} {name}s; the Ray cluster has {capacity.get(name, 0):g}"
    return ""


def for_worker(config: RunConfig) -> RunConfig:
    """The config as a worker elsewhere must read it: paths absolute (a cluster's workers do not
    start in this folder), and no progress bar (parallel bars would interleave into noise)."""
    paths = {key: str(Path(value).expanduser().resolve()) for key in PATH_KEYS if (value := getattr(config, key))}
    return attrs.evolve(config, progress_bar=False, **paths)


def train_stage(engine_factory: Callable[[], Engine], stage: Stage, experiment_root: str) -> StageResult:
    """The Ray task: one stage in a worker process, with an engine of its own."""
    from kdcore.quiet import quiet_libraries

    quiet_libraries()
    return run_stage(engine_factory(), stage, experiment_root)


class RayExecutor:
    """Runs a ``Pipeline``'s stages as Ray tasks, as many at once as the cluster has room for.

    :param address: a running cluster to join (``auto``, ``HOST:PORT`` or ``ray://...``);
        None starts a local Ray instance on this machine for the run and stops it after.
    :param engine_factory: builds each worker's engine; the default finds plugins through entry
        points, so a third-party plugin must be installed wherever the workers run.
    :param retries: attempts after the first for a task whose worker died.
    """

    def __init__(
        self, pipeline: Pipeline, *, address: str | None = None, engine_factory: Callable[[], Engine] = Engine,
        retries: int = RETRIES,
    ):
        self.pipeline = pipeline
        self.address = address
        self.engine_factory = engine_factory
        self.retries = retries
        for stage in pipeline.stages:
            if stage.config is not None and stage.config.num_nodes > 1:
                raise KdcoreError(f"stage {stage.name!r}: num_nodes={stage.config.num_nodes}, but under --executor ray "
                                  "a stage runs on one node; set num_nodes=1 or use the sequential executor")

    def run(self, on_stage: OnStage = lambda result: None, on_start: Callable[[Stage], None] = lambda stage: None) -> list[StageResult]:
        """Each stage's result goes to ``on_stage`` as it comes; ``on_start`` hears of each task
        submitted (it may wait for room in the cluster), since several stages run at once."""
        with ray_session(self.address) as ray:
            results = self._run_tasks(ray, on_stage, on_start)
        root = self.pipeline.experiment_root
        for stage in self.pipeline.stages:
            if stage.config is None:
                results[stage.name] = run_stage(self.pipeline.engine, stage, root)
                on_stage(results[stage.name])
        return [results[stage.name] for stage in self.pipeline.stages]

    def _run_tasks(self, ray: Any, on_stage: OnStage, on_start: Callable[[Stage], None]) -> dict[str, StageResult]:
        task = ray.remote(train_stage)
        capacity = ray.cluster_resources()
        root = str(Path(self.pipeline.experiment_root).resolve())
        waiting = [stage for stage in self.pipeline.stages if stage.config is not None]
        results: dict[str, StageResult] = {}
        running: dict[Any, Stage] = {}

        def finish(result: StageResult) -> None:
            results[result.stage.name] = result
            on_stage(result)

        with cancelled_on_exit(ray, running):
            while waiting or running:
                for stage in [s for s in waiting if all(need in results for need in s.needs)]:
                    waiting.remove(stage)
                    resources = stage_resources(stage.config, capacity.get("GPU", 0))
                    short = unplaceable(resources, capacity)
                    decided = self.pipeline.decide(stage, results)
                    if decided is None and short:
                        decided = StageResult(stage, "failed", short)
                    if decided is not None:
                        finish(decided)
                        continue
                    worker_stage = attrs.evolve(stage, config=for_worker(stage.config))
                    ref = task.options(**resources, max_retries=self.retries, retry_exceptions=False,
                                       name=stage.name).remote(self.engine_factory, worker_stage, root)
                    running[ref] = stage
                    on_start(stage)
                if not running:
                    break
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    stage = running.pop(ref)
                    finish(self._collect(ray, ref, stage))
        return results

    def _collect(self, ray: Any, ref: Any, stage: Stage) -> StageResult:
        try:
            return attrs.evolve(ray.get(ref), stage=stage)
        except ray.exceptions.RayError as error:
            died = isinstance(error, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                                      ray.exceptions.OutOfMemoryError))
            why = f"its worker died {self.retries + 1} times" if died else "the Ray task failed"
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            return StageResult(stage, "failed", f"{why}: {first_line}")




def tune_worker(engine_factory: Callable[[], Engine], base: RunConfig, space: list, trials: int, storage: str, study_name: str) -> None:
    """The Ray task of ``kdcore tune --executor ray``: one worker of the shared study."""
    from kdcore.quiet import quiet_libraries
    from kdcore.tune import run_trials

    quiet_libraries()
    run_trials(engine_factory(), base, space, trials, storage, study_name)


def tune_on_ray(
    base: RunConfig, space: list, trials: int, storage: str, study_name: str, *, workers: int | None = None,
    address: str | None = None, engine_factory: Callable[[], Engine] = Engine,
) -> Any:
    """Run the search's workers as Ray tasks (by default as many as the cluster has room for)
    until the study holds ``trials`` finished trials; returns the study. ``base`` must come from
    ``kdcore.tune.prepare``, so that the workers do not each make the shared inputs."""
    from kdcore.tune import finished_study

    base = for_worker(base)
    with ray_session(address) as ray:
        capacity = ray.cluster_resources()
        resources = stage_resources(base, capacity.get("GPU", 0))
        short = unplaceable(resources, capacity)
        if short:
            raise KdcoreError(f"a trial {short}")
        fits = int(capacity.get("CPU", 1) // resources["num_cpus"])
        count = max(1, min(workers or fits, trials))
        task = ray.remote(tune_worker).options(**resources, max_retries=RETRIES, retry_exceptions=False)
        refs = [task.remote(engine_factory, base, space, trials, storage, study_name) for _ in range(count)]
        with cancelled_on_exit(ray, refs):
            for ref in refs:
                try:
                    ray.get(ref)
                except ray.exceptions.RayError as error:
                    raise KdcoreError(f"a kdcore tune worker on Ray failed: {str(error).strip().splitlines()[-1]}") from None
    return finished_study(base, storage, study_name)
