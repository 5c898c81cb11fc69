"""The engine: resolve → validate → build → train → evaluate → write artifacts.

``Engine`` owns one plugin manager (no global state), so two engines with different plugins can
live in one process. ``plan`` does every check that needs no data, so a wrong combination, a
typo or a missing teacher fails in milliseconds; ``run`` then trains and writes the artifacts.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import lightning as L
import numpy as np
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch import nn

from kdcore.atomic import atomic_open, atomic_write_text
from kdcore.checkpoint import Checkpoint, load_checkpoint, load_weights, save_checkpoint
from kdcore.config import RunConfig, write_toml
from kdcore.contracts import DistillationStrategy, TrainingMode
from kdcore.data.module import GraphDataModule
from kdcore.distill import FrozenTeacher
from kdcore.errors import CheckpointError, IncompatibleError, TeacherError
from kdcore.layout import RunLayout, discover_teacher, run_layout, teacher_candidates
from kdcore.lock import run_lock
from kdcore.manager import Plugins
from kdcore.memory import kd_batch_size, load_factors
from kdcore.models import build_model
from kdcore.registry import Registry
from kdcore.run import Run
from kdcore.threads import torch_threads

logger = logging.getLogger("kdcore")


@attrs.frozen
class RunPlan:
    """A validated run: the resolved config and the plugins that will carry it out."""

    config: RunConfig
    mode: TrainingMode
    strategy: DistillationStrategy | None
    layout: RunLayout
    teacher_path: Path | None


@attrs.frozen
class RunResult:
    """What a finished run wrote and measured."""

    layout: RunLayout
    metrics: dict[str, Any]

    @property
    def run_dir(self) -> Path:
        return self.layout.root

    @property
    def checkpoint(self) -> Path:
        return self.layout.checkpoint


class Engine:
    """Finds plugins, checks a config against them, and runs it.

    :param plugins: extra plugin objects to register (after entry points and built-ins).
    :param load_entry_points: load third-party plugins from the ``kdcore`` entry-point group.
    :param disabled: plugin names to block; defaults to ``KDCORE_DISABLE_PLUGINS``.
    """

    def __init__(
        self,
        plugins: Iterable[object] = (),
        *,
        load_entry_points: bool = True,
        disabled: Iterable[str] | None = None,
    ):
        self.plugins = Plugins(plugins, load_entry_points=load_entry_points, disabled=disabled)
        self.plugins.collect()  # an engine checks every kind at once: a name clash stops it here
        self.plugin_manager = self.plugins.manager
        self.failures = self.plugins.failures
        self.modes: Registry[type[TrainingMode]] = self.plugins.modes
        self.strategies: Registry[type[DistillationStrategy]] = self.plugins.strategies
        self.datasets: Registry[type] = self.plugins.datasets
        self.models: Registry[type[nn.Module]] = self.plugins.models
        self.formats = self.plugins.formats

    # -- planning: everything that needs no data -------------------------------------------

    def vetoes(self, mode: TrainingMode, strategy: DistillationStrategy | None, config: RunConfig) -> list[str]:
        """Every reason any plugin gives against this combination."""
        return self.plugins.vetoes(mode, strategy, config)

    def plan(self, config: RunConfig) -> RunPlan:
        """Resolve names and defaults and validate everything, without reading data or building models."""
        from kdcore.tracking import check_packages

        check_packages(config)
        config, mode, strategy = self._resolve(config)
        mode.check(config)
        self.datasets.get(config.dataset)
        self.models.get(config.model)

        teacher_path = None
        if strategy is not None:
            teacher_path = self._teacher_path(config, mode)
            config = attrs.evolve(config, teacher_model_path=str(teacher_path))
            if config.model_size != "student":
                logger.warning("knowledge distillation is usually for students, but model_size is %r", config.model_size)
            config = scale_batch_for_kd(config)
        layout = self._layout(config, mode, strategy)
        return RunPlan(config=config, mode=mode, strategy=strategy, layout=layout, teacher_path=teacher_path)

    def layout_for(self, config: RunConfig) -> RunLayout:
        """Where a config's run writes its artifacts; checks names and combinations, not files."""
        return self._layout(*self._resolve(config))

    def _layout(self, config: RunConfig, mode: TrainingMode, strategy: DistillationStrategy | None) -> RunLayout:
        segment = distillation_segment(mode, strategy)
        return run_layout(config, model=config.model, learning_type=mode.learning_type, distillation=segment)

    def _resolve(self, config: RunConfig) -> tuple[RunConfig, TrainingMode, DistillationStrategy | None]:
        """Names → plugins, defaults filled in, and every plugin's veto heard."""
        mode = self.modes.get(config.mode)()
        config = attrs.evolve(config, model=config.model or mode.model)
        if not mode.accepts_model(config.model):
            raise IncompatibleError(f"mode {mode.name!r} trains {mode.model!r} models, not {config.model!r}")
        if config.teacher_model_path and not config.use_knowledge_distillation:
            raise IncompatibleError(
                "a teacher is given but knowledge distillation is off; add --kd NAME or --distillation with-kd"
            )
        strategy = None
        if config.use_knowledge_distillation:
            strategy_name = config.distillation_strategy or mode.default_strategy
            if strategy_name is not None:
                strategy = self.strategies.get(strategy_name)()
                config = attrs.evolve(config, distillation_strategy=strategy_name)
        elif config.distillation_strategy is not None:
            raise IncompatibleError(
                f"distillation_strategy {config.distillation_strategy!r} is set but use_knowledge_distillation is false"
            )
        vetoes = self.vetoes(mode, strategy, config)
        if config.use_knowledge_distillation and strategy is None and not vetoes:
            vetoes = [f"mode {mode.name!r} has no default distillation strategy; choose one with --kd NAME"]
        if vetoes:
            raise IncompatibleError(" ".join(vetoes))
        return config, mode, strategy

    def _teacher_path(self, config: RunConfig, mode: TrainingMode) -> Path:
        if config.teacher_model_path:
            path = Path(config.teacher_model_path)
            if not path.is_file():
                raise TeacherError(f"Teacher model not found: {path}")
        else:
            path = discover_teacher(config, model=config.model, learning_type=mode.learning_type)
            if path is None:
                searched = ", ".join(str(p) for p in teacher_candidates(config, model=config.model, learning_type=mode.learning_type))
                raise TeacherError(f"KD enabled but no teacher_model_path specified, and no teacher found at: {searched}")
        checkpoint = load_checkpoint(path)
        if checkpoint.model != config.model:
            raise TeacherError(f"teacher {path} is a {checkpoint.model!r} model, but the student is {config.model!r}")
        return path

    # -- running ----------------------------------------------------------------------------

    def load_model(self, checkpoint: Checkpoint, path: str | Path) -> nn.Module:
        """Rebuild a registered model from a checkpoint and load its weights."""
        try:
            model_class = self.models.get(checkpoint.model)
        except Exception as error:
            raise CheckpointError(f"{path}: {error}") from None
        try:
            model = model_class(**checkpoint.hparams)
        except TypeError as error:
            raise CheckpointError(f"{path}: hyperparameters do not fit model {checkpoint.model!r} ({error})") from None
        load_weights(path, model, checkpoint.state_dict)
        return model.eval()

    def build(self, plan: RunPlan) -> Run:
        """Read the data and build the student (and the frozen teacher, with KD) for a plan."""
        config, mode = plan.config, plan.mode
        L.seed_everything(config.seed, workers=True, verbose=False)
        dataset = self.datasets.get(config.dataset)(config, self.formats)
        datamodule = GraphDataModule(dataset, normal_only=mode.train_on_normal_only)
        datamodule.setup("fit")
        model = build_model(self.models.get(config.model), config.model_size, datamodule.info)
        model.gradient_checkpointing = config.gradient_checkpointing
        teacher = self._load_teacher(plan.teacher_path, datamodule) if plan.strategy else None
        return Run(
            engine=self, config=config, mode=mode, strategy=plan.strategy, layout=plan.layout,
            teacher_path=plan.teacher_path, datamodule=datamodule, model=model, teacher=teacher,
        )

    def run(self, config: RunConfig, *, callbacks: Iterable[L.Callback] = ()) -> RunResult | None:
        """Train, evaluate and write one run's artifacts; returns where they are and the metrics.

        ``callbacks`` are added to the Lightning trainer of modes that train through it. In a
        multi-process run (``--strategy ddp``) every process trains its share of each batch, and
        only the process of global rank 0 evaluates and writes; the others return None.
        """
        plan = self.plan(config)
        callbacks = list(callbacks)
        if rank_zero_only.rank != 0:
            with torch_threads(config.num_threads):
                self._train(plan, callbacks)
            return None
        with run_lock(plan.layout.root):
            plan.layout.metrics.unlink(missing_ok=True)  # the old run is no longer complete
            if not config.resume or distilled_otherwise(plan.layout.checkpoint, plan.config.distillation_strategy):
                shutil.rmtree(plan.layout.logs, ignore_errors=True)
                shutil.rmtree(plan.layout.root / "checkpoints", ignore_errors=True)
            with torch_threads(config.num_threads):
                run, train_seconds = self._train(plan, callbacks)
                evaluation = plan.mode.evaluate(run.model, run)
            return self._write_artifacts(run, evaluation, train_seconds)

    def _train(self, plan: RunPlan, callbacks: list[L.Callback]) -> tuple[Run, float]:
        run = self.build(plan)
        run.callbacks = callbacks
        started = time.perf_counter()
        plan.mode.prepare(run)
        plan.mode.fit(run)
        return run, time.perf_counter() - started

    def _load_teacher(self, path: Path, datamodule) -> FrozenTeacher:
        """The teacher, checked to see the data exactly as the student does (IDs and scaling)."""
        checkpoint = load_checkpoint(path)
        if checkpoint.extra.get("data", {}) != datamodule.splits.state:
            raise TeacherError(
                f"teacher {path} was trained on other data (CAN-ID vocabulary, feature scaling or window "
                f"settings differ); train the teacher on dataset {datamodule.config.dataset!r} with the same window settings"
            )
        return FrozenTeacher(self.load_model(checkpoint, path))

    def _write_artifacts(self, run: Run, evaluation, train_seconds: float) -> RunResult:
        config, layout = run.config, run.layout
        save_checkpoint(
            layout.checkpoint,
            Checkpoint(
                model=config.model,
                hparams=dict(run.model.hparams),
                state_dict=run.model.state_dict(),
                config=config.to_dict(),
                extra={**evaluation.extra, "data": run.datamodule.splits.state},
            ),
        )
        atomic_write_text(layout.config, write_toml(config))
        save_window_scores(layout.scores, evaluation.windows, evaluation.extra.get("threshold"))
        metrics = {
            "mode": config.mode,
            "model": config.model,
            "model_size": config.model_size,
            "dataset": config.dataset,
            "seed": config.seed,
            "distillation": config.distillation,
            "strategy": config.distillation_strategy if config.use_knowledge_distillation else None,
            "teacher": config.teacher_model_path if config.use_knowledge_distillation else None,
            "params": sum(p.numel() for p in run.model.parameters()),
            "checkpoint_bytes": layout.checkpoint.stat().st_size,
            "train_seconds": round(train_seconds, 3),
            **evaluation.metrics,  # over all test sets together
            "test_sets": evaluation.per_set,
        }
        atomic_write_text(layout.metrics, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        return RunResult(layout=layout, metrics=metrics)

    # -- introspection ------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What ``kdcore plugins --json`` prints."""
        return self.plugins.describe()

    def compatibility(self, config: RunConfig | None = None) -> dict[str, dict[str, str | None]]:
        """``{mode: {"no-kd" or strategy: None if allowed else reason}}``, from the same vetoes as ``plan``."""
        return self.plugins.compatibility(config)


def save_window_scores(path: Path, windows: dict[str, dict[str, Any]], threshold: float | None) -> None:
    """Every test window's score, label, attack name and start (time, or frame position), for curves and plots (``kdcore report``)."""
    arrays = {f"{name}/{key}": np.asarray(values) for name, columns in windows.items() for key, values in columns.items()}
    with atomic_open(path, "wb") as handle:
        np.savez(handle, threshold=np.array(np.nan if threshold is None else threshold), **arrays)


def scale_batch_for_kd(config: RunConfig) -> RunConfig:
    """The plan's KD safety factor applied once: the resolved config records the size that ran."""
    if not config.kd_batch_scaling:
        return config
    batch_size = kd_batch_size(config.batch_size, config.dataset, load_factors(config.batch_size_factors))
    logger.info("knowledge distillation: batch size %d -> %d (batch_size_factors)", config.batch_size, batch_size)
    return attrs.evolve(config, batch_size=batch_size, kd_batch_scaling=False)


def distilled_otherwise(checkpoint: Path, strategy: str | None) -> str | None:
    """The strategy the model saved at ``checkpoint`` was distilled with, where that is not
    ``strategy``: a folder ``with-kd`` filled under an earlier default strategy, which must be
    trained again from the start, not resumed nor kept. None otherwise, or with no model there."""
    try:
        return other_strategy(load_checkpoint(checkpoint), strategy)
    except (CheckpointError, OSError):
        return None


def other_strategy(checkpoint: Checkpoint, strategy: str | None) -> str | None:
    """``distilled_otherwise`` of a checkpoint already loaded."""
    saved = checkpoint.config.get("distillation_strategy")
    return saved if strategy is not None and saved != strategy else None


def distillation_segment(mode: TrainingMode, strategy: DistillationStrategy | None) -> str:
    """``no-kd``; ``with-kd`` for the mode's default strategy (the plan's paths); and
    ``with-kd-{strategy}`` for any other, so that runs of two strategies never overwrite each other."""
    if strategy is None:
        return "no-kd"
    return "with-kd" if strategy.name == mode.default_strategy else f"with-kd-{strategy.name}"

