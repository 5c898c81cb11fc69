"""Gradient-descent training for every mode through one LightningModule and Lightning's Trainer."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from kdcore.data.graphset import drop_profile, perturb_one_node, shift_off_normal
from kdcore.data.preprocess import ROLE_FEATURES, UNPROFILED, VEHICLE_BLOCK
from kdcore.distill import Distiller, outputs_of
from kdcore.errors import KdcoreError
from kdcore.memory import MemoryCleanup
from kdcore.teacher_cache import Numbered, TeacherCache, cache_key

# An agnostic node's distances from its ID's own profile (present where the node is profiled).
DEVIATIONS = [len(ROLE_FEATURES) + index for index, name in enumerate(VEHICLE_BLOCK) if name.endswith("_deviation")]

if TYPE_CHECKING:
    from kdcore.contracts import TrainingMode
    from kdcore.run import Run


class ModeModule(L.LightningModule):
    """The mode computes named outputs and the task loss; a ``Distiller``, when present, adds KD.

    The student is ``self.model``; the connectors are ``self.distiller.connectors`` and so are in
    the optimizer. The teacher is not a submodule and is never saved or switched to train mode.
    """

    def __init__(self, mode: TrainingMode, model: torch.nn.Module, run: Run, distiller: Distiller | None):
        super().__init__()
        self.mode = mode
        self.model = model
        self.distiller = distiller
        self.config = run.config

    def on_fit_start(self) -> None:
        if self.distiller is None:
            return
        self.distiller.teacher.to(self.device)
        if self.config.cache_teacher_outputs and self.distiller.cache is None:
            datamodule, names = self.trainer.datamodule, self.distiller.strategy.requires
            key = cache_key(self.config.teacher_model_path, self.mode.name, names, datamodule.splits.state, datamodule.train_set)
            cache = TeacherCache.load_or_compute(
                Path(self.config.experiment_root) / "cache" / "teacher", key,
                lambda: TeacherCache.compute(self.distiller.teacher, self.mode, datamodule.loader(datamodule.train_set),
                                             names, self.device, progress=self.config.progress_bar),
            )
            self.distiller.cache = cache.to(self.device)

    def student_view(self, batch: Any) -> Any:
        """What the student trains on: with the agnostic representation, some windows lose their
        vehicle block (``profile_dropout``), as another vehicle looks."""
        if self.config.representation == "agnostic" and self.config.profile_dropout:
            return drop_profile(batch, self.config.profile_dropout)
        return batch

    def on_train_epoch_start(self) -> None:
        self._loss_sums: dict[str, torch.Tensor] = {}
        self._graphs = 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        size = int(batch.num_graphs)
        whole, batch = batch, self.student_view(batch)
        outputs = outputs_of(self.mode, self.model, batch, self.distiller.strategy.requires if self.distiller else ())
        terms = {"task_loss": self.mode.task_loss(outputs, batch)}
        if self.config.synthetic_attacks and self.mode.learning_type == "supervised":
            terms["synthetic_loss"] = self._synthetic_loss(batch)
            terms["task_loss"] = (terms["task_loss"] + terms["synthetic_loss"]) / 2
        loss = terms["task_loss"]
        if self.distiller is not None:
            kd_terms = self.distiller.loss_terms(self.mode, outputs, batch, teacher_batch=whole)
            if self.config.kd_noise:
                kd_terms = self._with_perturbed(whole, kd_terms)
            terms.update({f"{name}_loss": value for name, value in kd_terms.items()})
            terms["kd_loss"] = torch.stack(list(kd_terms.values())).sum()
            loss = self.distiller.mix(terms["task_loss"], terms["kd_loss"])
        if not torch.isfinite(loss):  # the mix is linear, so a NaN or Inf term makes it non-finite too
            self._stop_on_non_finite(terms)
        for name, value in {**terms, "train_loss_epoch": loss}.items():
            self._loss_sums[name] = self._loss_sums.get(name, 0.0) + value.detach() * size
        self._graphs += size
        self.log("train_loss", loss, prog_bar=True, batch_size=size)
        return loss

    def _synthetic_loss(self, batch: Any) -> torch.Tensor:
        """The task loss on the batch's windows moved off normal traffic, labelled attacks
        (``synthetic_attacks``): an agnostic node in its distances from its ID's profile, where it
        has one (a window judged by roles alone keeps its label: roles move with the car, and
        moved roles called other cars' traffic an attack, docs/transfer.md); a vocabulary node in
        all its features."""
        if self.config.representation == "agnostic":
            columns, movable = DEVIATIONS, batch.x[:, UNPROFILED] == 0
        else:
            columns, movable = range(batch.x.size(1)), torch.ones(batch.num_nodes, dtype=torch.bool, device=batch.x.device)
        shifted = shift_off_normal(batch, self.config.synthetic_attacks, columns, movable)
        return self.mode.task_loss(self.mode.outputs(self.model, shifted), shifted)

    def _with_perturbed(self, whole: Any, kd_terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The KD terms averaged with those on perturbed copies of the windows (``kd_noise``):
        the student matches its teacher between the windows it trains on too."""
        noisy = perturb_one_node(whole, self.config.kd_noise)
        view = self.student_view(noisy)
        outputs = outputs_of(self.mode, self.model, view, self.distiller.strategy.requires)
        noisy_terms = self.distiller.loss_terms(self.mode, outputs, view, teacher_batch=noisy, cached=False)
        return {name: (value + noisy_terms[name]) / 2 for name, value in kd_terms.items()}

    def on_train_epoch_end(self) -> None:
        """Each loss term's epoch mean, logged once: a ``self.log`` per term and step would cost
        more than a student's forward pass."""
        for name, total in self._loss_sums.items():
            self.log(name, total / self._graphs, sync_dist=True)

    def _stop_on_non_finite(self, terms: dict[str, torch.Tensor]) -> None:
        """Stop at the first NaN or infinite loss term, naming it, instead of training on garbage."""
        bad = [(name, value) for name, value in terms.items() if not torch.isfinite(value).all()]
        name, value = bad[0] if bad else ("train_loss", self.distiller.mix(terms["task_loss"], terms["kd_loss"]))
        raise KdcoreError(
            f"{name} is {value.item()} at step {self.global_step} (epoch {self.current_epoch}); "
            "lower learning_rate or set gradient_clip_val"
        )

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        outputs = self.mode.outputs(self.model, batch)
        loss = self.mode.task_loss(outputs, batch)
        self.log("val_loss", loss, prog_bar=True, batch_size=int(batch.num_graphs), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.config.learning_rate, weight_decay=self.config.weight_decay)


def precision_for(config_precision: str, accelerator: str) -> str:
    """``auto``: fp16 mixed precision when training on CUDA, full fp32 elsewhere."""
    if config_precision != "auto":
        return config_precision
    on_cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "16-mixed" if on_cuda else "32-true"


LAST_CHECKPOINT = "last.ckpt"


class RandomStates(L.Callback):
    """The torch, numpy and Python random states, saved in every checkpoint and restored on resume,
    so a resumed run draws the same shuffles, dropout masks and negative samples as one never stopped."""

    def state_dict(self) -> dict[str, Any]:
        kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": position,
                      "has_gauss": has_gauss, "cached_gaussian": cached_gaussian},
            "python": random.getstate(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        numpy_state = state["numpy"]
        np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                             numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
        random.setstate(state["python"])


def standard_callbacks(run: Run) -> list[L.Callback]:
    """``checkpoints/last.ckpt`` (with the random states) after every epoch, for ``--resume``, and early stopping."""
    callbacks: list[L.Callback] = [
        RandomStates(),
        # The newest epoch only, always as last.ckpt (``save_last`` alone writes nothing until training ends).
        ModelCheckpoint(dirpath=run.layout.root / "checkpoints", filename=LAST_CHECKPOINT.removesuffix(".ckpt"),
                        monitor=None, save_top_k=1, enable_version_counter=False)
    ]
    if run.config.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor="val_loss", patience=run.config.early_stopping_patience, strict=False))
    if run.config.memory_cleanup_every:
        callbacks.append(MemoryCleanup(run.config.memory_cleanup_every))
    return callbacks


def resume_checkpoint(run: Run) -> str | None:
    path = run.layout.root / "checkpoints" / LAST_CHECKPOINT
    return str(path) if run.config.resume and path.is_file() else None


def make_trainer(run: Run, callbacks: list[L.Callback], **options: Any) -> L.Trainer:
    """Lightning's Trainer for a run; it logs to ``logs/metrics.csv`` always, and to the trackers
    that ``loggers`` selects (kdcore.tracking)."""
    from kdcore.tracking import run_loggers

    config = run.config
    return L.Trainer(
        max_epochs=config.max_epochs,
        max_steps=config.max_steps,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        num_nodes=config.num_nodes,
        precision=precision_for(config.precision, config.accelerator),
        deterministic=config.deterministic,
        default_root_dir=run.layout.root,  # where Lightning's own files (e.g. SLURM requeue checkpoints) go
        logger=run_loggers(run),
        callbacks=[*standard_callbacks(run), *run.callbacks, *callbacks],
        enable_progress_bar=config.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        gradient_clip_val=config.gradient_clip_val or None,
        log_every_n_steps=1,
        **options,
    )


def fit_with_lightning(mode: TrainingMode, run: Run) -> ModeModule:
    """Train ``run.model`` in place, distilling from ``run.teacher`` when a strategy is set."""
    distiller = None
    if run.strategy is not None:
        distiller = Distiller(run.strategy, run.teacher, run.config)
        if run.config.cache_teacher_outputs:
            splits = run.datamodule.splits
            run.datamodule.splits = attrs.evolve(splits, train=Numbered(splits.train))
        sample = next(iter(run.datamodule.train_dataloader()))
        distiller.build_connectors(mode, run.model, sample)
    module = ModeModule(mode, run.model, run, distiller)
    trainer = make_trainer(run, mode.callbacks(run), **mode.trainer_options(run))
    trainer.fit(module, datamodule=run.datamodule, ckpt_path=resume_checkpoint(run), weights_only=True)
    return module
