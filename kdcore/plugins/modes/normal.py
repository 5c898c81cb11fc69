"""``normal``: the GAT classifier trained supervised, with class weights against imbalance."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdcore.contracts import KDSupport, TrainingMode
from kdcore.hookspecs import hookimpl
from kdcore.metrics import evaluate_scores


class NormalMode(TrainingMode):
    name = "normal"
    kd_support = KDSupport.OPTIONAL
    provides = ("logits",)
    default_strategy = "gat-softlabel"
    model = "gat"
    learning_type = "supervised"

    def __init__(self):
        self.class_weights: torch.Tensor | None = None

    def prepare(self, run):
        """Weight classes inversely to their training frequency."""
        counts = torch.tensor(run.datamodule.class_counts(), dtype=torch.float32).clamp(min=1)
        self.class_weights = counts.sum() / (len(counts) * counts)

    def outputs(self, model, batch):
        return {"logits": model(batch.x, batch.id_token, batch.edge_index, batch.batch)}

    def task_loss(self, outputs, batch):
        logits = outputs["logits"]
        weights = None if self.class_weights is None else self.class_weights.to(logits.device)
        return F.cross_entropy(logits.float(), batch.y, weight=weights)

    @torch.no_grad()
    def attack_probabilities(self, model, loader) -> torch.Tensor:
        """P(attack) per window, in loader order."""
        model.eval()
        device = next(model.parameters()).device
        probabilities = [
            torch.softmax(self.outputs(model, batch.to(device))["logits"].float(), -1)[:, 1].cpu() for batch in loader
        ]
        return torch.cat(probabilities) if probabilities else torch.empty(0)

    def evaluate(self, model, run):
        return evaluate_scores(
            lambda loader: self.attack_probabilities(model, loader), run.datamodule, threshold=0.5
        )


@hookimpl
def kdcore_register_modes(register):
    register(NormalMode)
