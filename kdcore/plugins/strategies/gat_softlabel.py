"""``gat-softlabel``: Hinton-style soft-label distillation of classifier logits."""

from __future__ import annotations

from kdcore.contracts import DistillationStrategy
from kdcore.hookspecs import hookimpl


class GatSoftLabel(DistillationStrategy):
    """KL(teacher ‖ student) on temperature-softened logits, ``batchmean``, scaled by T²."""

    name = "gat-softlabel"
    requires = ("logits",)
    on_recordings = True  # measured: the student keeps its teacher on other vehicles (docs/transfer.md)

    def loss_terms(self, student, teacher, connectors, batch, config):
        import torch.nn.functional as F

        t = config.distillation_temperature
        soft_student = F.log_softmax(student["logits"] / t, dim=-1)
        soft_teacher = F.softmax(teacher["logits"] / t, dim=-1)
        return {"kd_softlabel": F.kl_div(soft_student, soft_teacher, reduction="batchmean") * t * t}


@hookimpl
def kdcore_register_strategies(register):
    register(GatSoftLabel)
