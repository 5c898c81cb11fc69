"""Knowledge distillation as a toggle: a frozen teacher, trainable connectors, and loss mixing.

The teacher is held by ``FrozenTeacher``, which is not an ``nn.Module``: it never appears in the
student's ``state_dict`` or checkpoint, ``LightningModule.train()`` cannot reach it, and its
forward always runs in eval mode under ``no_grad`` (an output computed on request, such as the
GAT's node attribution, differentiates with respect to the inputs, never the frozen weights).
The connectors (e.g. a projection student_dim → teacher_dim) live in ``Distiller``, an
``nn.Module`` trained with the student.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from kdcore.config import RunConfig
    from kdcore.contracts import DistillationStrategy, TrainingMode
    from kdcore.teacher_cache import TeacherCache


class FrozenTeacher:
    """A trained model that only ever runs forward, in eval mode, its weights frozen."""

    def __init__(self, model: nn.Module):
        self.model = model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @property
    def training(self) -> bool:
        return self.model.training

    def to(self, device: torch.device | str) -> FrozenTeacher:
        self.model.to(device)
        return self

    @torch.no_grad()
    def outputs(self, mode: TrainingMode, batch: Any, names: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
        """The mode's outputs, with those of ``names`` it computes only on request."""
        self.model.eval()
        return outputs_of(mode, self.model, batch, names)


class Distiller(nn.Module):
    """A strategy, its trainable connectors and the frozen teacher, mixed as the plan says:
    ``alpha * kd + (1 - alpha) * task``, with KD terms computed in float32."""

    def __init__(self, strategy: DistillationStrategy, teacher: FrozenTeacher, config: RunConfig):
        super().__init__()
        self.strategy = strategy
        self.config = config
        self.teacher = teacher  # a plain object, so never a submodule
        self.connectors = nn.ModuleDict()
        self.cache: TeacherCache | None = None  # set by ``cache_teacher_outputs``

    def build_connectors(self, mode: TrainingMode, student: nn.Module, sample_batch: Any) -> None:
        """Create the connectors once output dimensions are known, from one sample batch."""
        with torch.no_grad():
            was_training = student.training
            student.eval()
            student_dims = _last_dims(outputs_of(mode, student, sample_batch, self.strategy.requires), self.strategy.requires)
            student.train(was_training)
            teacher_dims = _last_dims(self.teacher.outputs(mode, sample_batch, self.strategy.requires), self.strategy.requires)
        self.connectors = self.strategy.build_connectors(student_dims, teacher_dims)

    def loss_terms(
        self, mode: TrainingMode, student_outputs: dict[str, torch.Tensor], batch: Any, teacher_batch: Any = None,
        cached: bool = True,
    ) -> dict[str, torch.Tensor]:
        """The strategy's terms on ``batch``, the student's view. The teacher judges
        ``teacher_batch`` (default: the same): the whole windows, when the student sees some of
        them without their vehicle block — it passes on what it knows from the vehicle's profile
        to a student that must judge by roles alone (distillation with privileged information).
        ``cached=False``: windows the cache cannot hold (perturbed ones), judged by the teacher now."""
        teacher_batch = batch if teacher_batch is None else teacher_batch
        teacher_outputs = (self.cache.lookup(teacher_batch) if self.cache is not None and cached
                           else self.teacher.outputs(mode, teacher_batch, self.strategy.requires))
        device_type = next(iter(student_outputs.values())).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            student32 = {k: v.float() for k, v in student_outputs.items()}
            teacher32 = {k: v.float() for k, v in teacher_outputs.items()}
            return self.strategy.loss_terms(student32, teacher32, self.connectors, batch, self.config)

    def mix(self, task_loss: torch.Tensor, kd_loss: torch.Tensor) -> torch.Tensor:
        alpha = self.config.distillation_alpha
        return alpha * kd_loss + (1.0 - alpha) * task_loss


def outputs_of(mode: TrainingMode, model: nn.Module, batch: Any, names: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """``mode.outputs``, and those of ``names`` the mode computes only on request (``on_request``)."""
    outputs = mode.outputs(model, batch)
    requested = tuple(name for name in names if name in mode.on_request)
    return {**outputs, **mode.requested_outputs(model, batch, requested)} if requested else outputs


def _last_dims(outputs: dict[str, torch.Tensor], names: tuple[str, ...]) -> dict[str, int]:
    return {name: int(outputs[name].shape[-1]) for name in names if name in outputs}
