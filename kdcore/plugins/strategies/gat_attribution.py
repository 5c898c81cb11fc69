"""``gat-attribution``: soft labels, and where in the window the teacher looks.

Soft labels tell a student *that* a window is an attack, not *why*. A student of 2–3 % of its
teacher's parameters can fit its training windows on whatever comes with the attacks there: on
ROAD (seed 7) the GAT student+KD fitted every training window and ranked the held-out part of the
reverse-light capture at AUROC 0.74, where its teacher ranked it at 1.00. This strategy adds, on
the windows the teacher calls attacks, the match of the two models' node attributions (each
node's gradient × input of the attack log-odds): per window, scaled to unit root mean square and
softmaxed over the window's nodes, student to teacher by KL divergence (docs/transfer.md).
"""

from __future__ import annotations

from kdcore.hookspecs import hookimpl
from kdcore.plugins.strategies.gat_softlabel import GatSoftLabel


class GatAttribution(GatSoftLabel):
    """``gat-softlabel``'s term plus ``kd_attribution``: KL(teacher ‖ student) of the windows'
    node-attribution distributions on the windows the teacher calls attacks (a normal window's
    attribution says nothing of where an attack is), per window of the batch — an unbiased
    per-window mean, so two processes' halves average to the whole batch's (DDP)."""

    name = "gat-attribution"
    requires = ("logits", "node_attribution")

    def loss_terms(self, student, teacher, connectors, batch, config):
        terms = super().loss_terms(student, teacher, connectors, batch, config)
        attacks = teacher["logits"][:, 1] > teacher["logits"][:, 0]
        divergence = attribution_divergence(student["node_attribution"], teacher["node_attribution"], batch.batch)
        terms["kd_attribution"] = (divergence * attacks).sum() / len(attacks)
        return terms


def attribution_divergence(student, teacher, graph):
    """Per window, KL(teacher ‖ student) of the nodes' attributions as distributions over the
    window's nodes, each scaled to unit root mean square first (so the match is of where, not of
    how much: the two models' log-odds differ in scale)."""
    import torch
    from torch_geometric.utils import scatter, softmax

    windows = int(graph.max()) + 1 if graph.numel() else 0

    def log_distribution(attribution):
        rms = scatter(attribution * attribution, graph, dim_size=windows, reduce="mean").sqrt().clamp_min(1e-6)
        return torch.log(softmax(attribution / rms[graph], graph).clamp_min(1e-12))

    log_teacher, log_student = log_distribution(teacher), log_distribution(student)
    return scatter(log_teacher.exp() * (log_teacher - log_student), graph, dim_size=windows, reduce="sum")


@hookimpl
def kdcore_register_strategies(register):
    register(GatAttribution)
