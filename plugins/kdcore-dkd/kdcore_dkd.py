"""Decoupled Knowledge Distillation (Zhao et al., CVPR 2022) for kdcore classifiers.

torch is imported inside the functions that compute losses: ``kdcore plugins`` and the data
commands import every plugin module, and should not wait for torch.
"""

from __future__ import annotations

import kdcore

MASKED = 1000.0  # subtracted from the target logit to drop it from the non-target softmax


class DecoupledKD(kdcore.DistillationStrategy):
    """``alpha_tckd`` · TCKD + ``beta_nckd`` · NCKD, each KL(teacher ‖ student) at temperature T, × T²."""

    name = "dkd"
    requires = ("logits",)
    alpha_tckd = 1.0
    beta_nckd = 8.0

    def loss_terms(self, student, teacher, connectors, batch, config):
        import torch.nn.functional as F

        t = config.distillation_temperature
        target = F.one_hot(batch.y, num_classes=student["logits"].size(-1)).bool()
        return {
            "kd_tckd": self.alpha_tckd * target_class_kd(student["logits"], teacher["logits"], target, t),
            "kd_nckd": self.beta_nckd * non_target_class_kd(student["logits"], teacher["logits"], target, t),
        }


def _binary(probabilities, target):
    """[p(target), p(any other class)] per row."""
    import torch

    p_target = (probabilities * target).sum(-1, keepdim=True)
    return torch.cat([p_target, 1.0 - p_target], dim=-1).clamp_min(1e-8)


def target_class_kd(student_logits, teacher_logits, target, t):
    import torch.nn.functional as F

    student = _binary(F.softmax(student_logits / t, dim=-1), target)
    teacher = _binary(F.softmax(teacher_logits / t, dim=-1), target)
    return F.kl_div(student.log(), teacher, reduction="batchmean") * t * t


def non_target_class_kd(student_logits, teacher_logits, target, t):
    import torch.nn.functional as F

    student = F.log_softmax(student_logits / t - MASKED * target, dim=-1)
    teacher = F.softmax(teacher_logits / t - MASKED * target, dim=-1)
    return F.kl_div(student, teacher, reduction="batchmean") * t * t


@kdcore.hookimpl
def kdcore_register_strategies(register):
    register(DecoupledKD)
