"""The whole study as one DAG: teachers → students with and without KD → fusion → report.

Each stage is one ``Engine.run``. A stage whose artifacts are complete (its ``metrics.json``
exists, its mode does not call its checkpoint stale, and a student was distilled with the strategy
asked for) is skipped, so an interrupted pipeline continues where it stopped; the stage that was
interrupted resumes from its ``last.ckpt``. A failing stage stops its dependants, which are
reported as blocked, and the stages that do not depend on it still run.

``Pipeline.run`` carries the stages out one after another in this process; ``kdcore.ray_executor``
runs the same DAG as Ray tasks, deciding each stage through the same ``Pipeline.decide``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs

from kdcore.checkpoint import load_checkpoint
from kdcore.config import RunConfig
from kdcore.engine import Engine, other_strategy
from kdcore.errors import CheckpointError, KdcoreError
from kdcore.tracking import local_store


@attrs.frozen
class Stage:
    name: str
    config: RunConfig | None  # None: the report
    needs: tuple[str, ...] = ()


@attrs.define
class StageResult:
    stage: Stage
    status: str  # "done", "skipped (complete)", "failed", "blocked", "planned", "complete"
    detail: str = ""
    started: float | None = None  # time.time() when the stage began and ended, where it ran
    finished: float | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.started is None or self.finished is None else self.finished - self.started


OnStage = Callable[[StageResult], None]


def study_stages(base: RunConfig, datasets: Iterable[str]) -> list[Stage]:
    """The plan's study for each dataset — and with ``base.seeds``, for each seed, in its own
    ``{experiment_root}/seed-{seed}`` — in dependency order."""
    stages: list[Stage] = []
    studies = [(dataset, seed) for dataset in datasets for seed in (base.seeds or (None,))]
    for dataset, seed in studies:
        config = attrs.evolve(base, dataset=dataset, use_knowledge_distillation=False, distillation_strategy=None, seeds=())
        prefix = dataset
        if seed is not None:
            config = attrs.evolve(config, seed=seed, experiment_root=str(Path(base.experiment_root) / f"seed-{seed}"))
            if "mlflow" in base.loggers:  # one store for every seed, so that they compare in MLflow
                config = attrs.evolve(config, tracking_uri=base.tracking_uri or local_store(base.experiment_root))
            prefix = f"{dataset}/seed-{seed}"
        teacher = attrs.evolve(config, model_size="teacher")
        student = attrs.evolve(config, model_size="student")
        kd = attrs.evolve(student, use_knowledge_distillation=True)

        def stage(name: str, run: RunConfig | None, *needs: str) -> None:
            stages.append(Stage(f"{prefix}/{name}", run, tuple(f"{prefix}/{need}" for need in needs)))

        stage("vgae-teacher", attrs.evolve(teacher, mode="autoencoder"))
        stage("gat-teacher", attrs.evolve(teacher, mode="curriculum"), "vgae-teacher")
        stage("vgae-student", attrs.evolve(student, mode="autoencoder"))
        stage("vgae-student-kd", attrs.evolve(kd, mode="autoencoder"), "vgae-teacher")
        stage("gat-student", attrs.evolve(student, mode="curriculum"), "vgae-teacher")
        stage("gat-student-kd", attrs.evolve(kd, mode="curriculum"), "vgae-teacher", "gat-teacher")
        stage("fusion-teachers", attrs.evolve(teacher, mode="fusion"), "vgae-teacher", "gat-teacher")
        stage("fusion-students", attrs.evolve(student, mode="fusion"), "vgae-student-kd", "gat-student-kd")
    names = [s.name for s in stages]
    stages.append(Stage("report", None, tuple(names)))
    return stages


class Pipeline:
    """Runs stages in order through one ``Engine``, skipping what is complete."""

    def __init__(self, engine: Engine, stages: list[Stage], experiment_root: str | Path):
        self.engine = engine
        self.stages = stages
        self.experiment_root = Path(experiment_root)
        known: set[str] = set()
        for stage in stages:
            missing = [need for need in stage.needs if need not in known]
            if missing:
                raise KdcoreError(f"stage {stage.name!r} needs {', '.join(missing)}, which do not come before it")
            known.add(stage.name)

    def is_complete(self, stage: Stage) -> bool:
        """Its artifacts are all there and its checkpoint is not stale: an earlier version of
        its mode made it another way (``TrainingMode.stale``), e.g. a VGAE scored otherwise, or
        it was distilled with another strategy (an earlier default)."""
        if stage.config is None:
            return False  # the report is cheap: always rewritten from what is there
        layout = self.engine.layout_for(stage.config)
        if not layout.is_complete():
            return False
        try:
            checkpoint = load_checkpoint(layout.checkpoint)
        except CheckpointError:
            return False  # unreadable: train it again
        mode = self.engine.modes.get(stage.config.mode)
        strategy = (stage.config.distillation_strategy or mode.default_strategy) if stage.config.use_knowledge_distillation else None
        return mode().stale(checkpoint) is None and other_strategy(checkpoint, strategy) is None

    def dry_run(self) -> list[StageResult]:
        return [
            StageResult(s, "complete" if self.is_complete(s) else "planned", self._where(s)) for s in self.stages
        ]

    def decide(self, stage: Stage, results: dict[str, StageResult]) -> StageResult | None:
        """The result a stage gets without running — blocked by a failed need, or complete — or
        None when it must run. Every need must already have its result."""
        failed = [need for need in stage.needs if results[need].status in ("failed", "blocked")]
        if failed and stage.config is not None:
            return StageResult(stage, "blocked", f"needs {', '.join(failed)}")
        if self.is_complete(stage):
            return StageResult(stage, "skipped (complete)", self._where(stage))
        return None

    def run(self, on_stage: OnStage = lambda result: None) -> list[StageResult]:
        results: dict[str, StageResult] = {}
        for stage in self.stages:
            result = self.decide(stage, results) or run_stage(self.engine, stage, self.experiment_root)
            results[stage.name] = result
            on_stage(result)
        return list(results.values())

    def _where(self, stage: Stage) -> str:
        if stage.config is None:
            return str(self.experiment_root / "report" / "report.md")
        return str(self.engine.layout_for(stage.config).root)


def run_stage(engine: Engine, stage: Stage, experiment_root: str | Path) -> StageResult:
    """Carry one stage out; whatever goes wrong becomes a ``failed`` result, never an exception,
    so a broken stage cannot take the others down."""
    from kdcore.report import write_report

    started = time.time()
    try:
        if stage.config is None:
            detail = str(write_report(Path(experiment_root)))
        else:
            result = engine.run(attrs.evolve(stage.config, resume=True))
            detail = f"F1 {result.metrics['f1']:.4f} · {result.run_dir}"
        status = "done"
    except KdcoreError as error:
        status, detail = "failed", str(error)
    except Exception as error:  # noqa: BLE001
        status, detail = "failed", f"{type(error).__name__}: {error}"
    return StageResult(stage, status, detail, started, time.time())
