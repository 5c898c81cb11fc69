"""Distilling a student from its teacher again, on the new vehicle's calibration recording.

A teacher carries to a vehicle it was not trained on better than its student: the GAT student+KD
put one vehicle's normal windows anywhere from 5 to 18 log-odds where its teacher kept them within
4 to 7, and lost that vehicle's fuzzing to the threshold (docs/transfer.md). Distillation needs no
labels, so ``kdcore calibrate`` lets the student match its teacher once more, with the strategy it
was distilled with, on the recording's windows as the new vehicle presents them — then fits the
threshold on the student as it now scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch_geometric.loader import DataLoader

from kdcore.checkpoint import Checkpoint, load_checkpoint
from kdcore.config import make_config
from kdcore.contracts import DistillationStrategy
from kdcore.distill import Distiller, FrozenTeacher, outputs_of
from kdcore.errors import TeacherError
from kdcore.teacher_cache import Numbered, TeacherCache

STEPS = 100  # optimiser steps on the recording: a few seconds on a CPU; what the figures in docs/transfer.md took
LEARNING_RATE = 1e-3  # a fifth of training's default: the student is adjusted, not retrained
BATCH_WINDOWS = 64


def recording_distillation(engine, checkpoint: Checkpoint, path: Path,
                           teacher: str | Path | None) -> tuple[DistillationStrategy, Path] | None:
    """The strategy and teacher to distil ``checkpoint`` (read from ``path``) again with on a
    recording: those it was distilled with in training (``teacher`` in place of its teacher, if
    given); None for a model trained without KD or with a strategy not ``on_recordings``."""
    name = checkpoint.config.get("distillation_strategy") if checkpoint.config.get("use_knowledge_distillation") else None
    strategy = engine.strategies.get(name)() if name else None
    if strategy is None or not strategy.on_recordings:
        if teacher is not None:
            how = f"distilled with {name!r}, which does not distil on recordings" if name else "trained without KD"
            raise TeacherError(f"{path}: {how}; --teacher does not apply")
        return None
    teacher = teacher or checkpoint.config.get("teacher_model_path")
    if not teacher:
        raise TeacherError(f"{path}: was distilled, but its checkpoint names no teacher; pass --teacher PATH or --no-distil")
    if not Path(teacher).is_file():
        raise TeacherError(f"teacher of {path} not found: {teacher}; pass --teacher PATH or --no-distil")
    return strategy, Path(teacher)


def distil_on_recording(engine, student: nn.Module, checkpoint: Checkpoint, strategy: DistillationStrategy, teacher_path: Path,
                        windows, mode, steps: int = STEPS) -> dict[str, Any]:
    """Train ``student`` (in place) to match its teacher on ``windows`` (a prepared graph set of the
    recording) with ``strategy``'s terms alone, there being no labels; returns what was done, for
    the calibration record."""
    teacher_checkpoint = load_checkpoint(teacher_path)
    if teacher_checkpoint.model != checkpoint.model or _windows_of(teacher_checkpoint) != _windows_of(checkpoint):
        raise TeacherError(f"teacher {teacher_path} is not a {checkpoint.model} trained on the student's data (IDs, scaling, windows)")
    config = make_config(checkpoint.config, where=f"the config of {teacher_path}'s student")
    distiller = Distiller(strategy, FrozenTeacher(engine.load_model(teacher_checkpoint, teacher_path)), config)
    L.seed_everything(config.seed, workers=True, verbose=False)
    windows = Numbered(windows)  # the teacher's outputs, computed once, are looked up by graph
    loader = DataLoader(windows, batch_size=BATCH_WINDOWS, shuffle=True)
    distiller.build_connectors(mode, student, next(iter(loader)))
    trainer = L.Trainer(max_steps=steps, accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, deterministic=config.deterministic)
    module = RecordingDistillation(mode, student.train(), distiller, DataLoader(windows, batch_size=BATCH_WINDOWS))
    trainer.fit(module, train_dataloaders=loader)  # as in training: dropout on
    student.cpu().eval()
    return {"teacher": str(teacher_path), "strategy": strategy.name, "steps": int(trainer.global_step),
            "final_kd_loss": round(float(trainer.callback_metrics.get("kd_loss", float("nan"))), 6)}


def _windows_of(checkpoint: Checkpoint) -> dict[str, Any]:
    """What a model's training data was, calibration aside: a calibrated model has another
    preprocessing, on the same representation."""
    data = checkpoint.extra.get("data", {})
    return {**{key: value for key, value in data.items() if key != "preprocessing"},
            "representation": data.get("preprocessing", {}).get("representation")}


class RecordingDistillation(L.LightningModule):
    """The student and its strategy's connectors, trained on the KD terms alone. The frozen
    teacher judges each recording window once (``in_order``, a loader that does not shuffle), not
    at each of the steps that see it again: the teacher costs more than the student (a GAT
    teacher is several networks)."""

    def __init__(self, mode, model: nn.Module, distiller: Distiller, in_order: DataLoader):
        super().__init__()
        self.mode, self.model, self.distiller, self.in_order = mode, model, distiller, in_order

    def on_fit_start(self) -> None:
        teacher, names = self.distiller.teacher.to(self.device), self.distiller.strategy.requires
        self.distiller.cache = TeacherCache.compute(teacher, self.mode, self.in_order, names, self.device)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        outputs = outputs_of(self.mode, self.model, batch, self.distiller.strategy.requires)
        loss = torch.stack(list(self.distiller.loss_terms(self.mode, outputs, batch).values())).sum()
        self.log("kd_loss", loss, batch_size=int(batch.num_graphs))
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=LEARNING_RATE)
