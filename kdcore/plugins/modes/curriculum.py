"""``curriculum``: the GAT trained on normals that grow harder each epoch, judged by a VGAE.

A trained VGAE (the autoencoder teacher in the artifact layout) scores every normal training
window; its plain reconstruction error — every feature weighed alike, not by the VGAE's error
scale — is the window's difficulty. (Measured on real camaro traffic, ordering by the weighed
score raised the curriculum GAT student+KD's false alerts on another recording of the car to
15 of 215 windows, past the 5 % the scenario test allows; with the plain error it stays within.)
Each epoch keeps every attack window and draws four normals per attack, centred on a difficulty
rank that moves from the easiest normals in the first epoch to the hardest in the last. The draw
is redone every epoch (``reload_dataloaders_every_n_epochs=1``), so the schedule really advances.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kdcore.errors import KdcoreError
from kdcore.hookspecs import hookimpl
from kdcore.layout import run_layout
from kdcore.plugins.modes.autoencoder import AutoencoderMode
from kdcore.plugins.modes.normal import NormalMode

if TYPE_CHECKING:
    import torch


def scorer_path(config):
    """The VGAE that judges difficulty: the no-KD autoencoder teacher of the same dataset."""
    layout = run_layout(
        config, model="vgae", learning_type="unsupervised", model_size="teacher", distillation="no-kd", mode="autoencoder"
    )
    return layout.checkpoint


class CurriculumSampler:
    """Indices of the training windows for one epoch: all attacks plus easy→hard normals."""

    def __init__(self, difficulty: torch.Tensor, normal_index: torch.Tensor, attack_index: torch.Tensor,
                 max_epochs: int, seed: int, normals_per_attack: int = 4, spread: float = 0.15):
        import torch

        self.order = normal_index[torch.argsort(difficulty)]  # easiest first
        self.difficulty = difficulty
        self.attack_index = attack_index
        self.max_epochs = max_epochs
        self.seed = seed
        self.num_normals = min(len(self.order), max(1, normals_per_attack * len(attack_index)))
        self.spread = spread

    def progress(self, epoch: int) -> float:
        return min(1.0, epoch / max(1, self.max_epochs - 1))

    def __call__(self, epoch: int) -> torch.Tensor:
        import torch

        rank = torch.linspace(0.0, 1.0, len(self.order))
        weights = torch.exp(-((rank - self.progress(epoch)) ** 2) / (2 * self.spread**2))
        generator = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        chosen = torch.multinomial(weights, self.num_normals, replacement=False, generator=generator)
        return torch.cat([self.order[chosen], self.attack_index])


class CurriculumMode(NormalMode):
    name = "curriculum"

    def check(self, config):
        path = scorer_path(config)
        if not path.is_file():
            where = f" --experiment-root {config.experiment_root}" if config.experiment_root != "experiments" else ""
            data = f" --data-root {config.data_root}" if config.data_root else ""
            raise KdcoreError(
                f"curriculum mode needs a trained VGAE at {path}; train it first with "
                f"`kdcore run --mode autoencoder --dataset {config.dataset}{data}{where}`"
            )

    def prepare(self, run):
        import torch
        from torch.utils.data import Subset

        from kdcore.checkpoint import load_checkpoint
        from kdcore.data.graphset import labels_of

        super().prepare(run)
        path = scorer_path(run.config)
        vgae = run.engine.load_model(load_checkpoint(path), path)
        datamodule = run.datamodule
        labels = labels_of(datamodule.train_set)
        normal_index = torch.nonzero(labels == 0).view(-1)
        attack_index = torch.nonzero(labels == 1).view(-1)
        vgae.error_scale.fill_(1.0)  # difficulty: the plain error, every feature alike
        scores = AutoencoderMode().window_scores(vgae, datamodule.loader(Subset(datamodule.train_set, normal_index.tolist())))
        self.sampler = CurriculumSampler(scores, normal_index, attack_index, run.config.max_epochs, run.config.seed)
        datamodule.epoch_sampler = self.sampler

    def trainer_options(self, run):
        return {"reload_dataloaders_every_n_epochs": 1}


@hookimpl
def kdcore_register_modes(register):
    register(CurriculumMode)
