"""``normal``: the GAT classifier trained supervised, with class weights against imbalance.

torch is imported in the methods that train and score, so listing the mode costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kdcore.contracts import KDSupport, TrainingMode
from kdcore.hookspecs import hookimpl

if TYPE_CHECKING:
    import torch


class NormalMode(TrainingMode):
    name = "normal"
    kd_support = KDSupport.OPTIONAL
    provides = ("logits", "member_logits", "node_attribution")
    on_request = ("node_attribution",)
    default_strategy = "gat-attribution"
    model = "gat"
    learning_type = "supervised"

    def __init__(self):
        self.class_weights: torch.Tensor | None = None

    def prepare(self, run):
        """Weight classes inversely to their training frequency (weights average 1 per graph)."""
        import torch

        counts = torch.tensor(run.datamodule.class_counts(), dtype=torch.float32).clamp(min=1)
        self.class_weights = counts.sum() / (len(counts) * counts)

    def outputs(self, model, batch):
        """``logits``, the model's; ``member_logits``, each of its networks' (``GAT.members``; a
        model of one network, any ``model(x, id_token, edge_index, batch) -> logits``, is its own)."""
        inputs = (batch.x, batch.id_token, batch.edge_index, batch.batch)
        members = model.member_logits(*inputs) if hasattr(model, "member_logits") else model(*inputs)[None]
        return {"logits": members.mean(0), "member_logits": members}

    def task_loss(self, outputs, batch):
        """Cross-entropy, each graph weighted by its class weight, averaged over the batch; for a
        GAT of several networks, each network's, averaged over them: each is trained as if alone,
        so that they stay apart (a deep ensemble), not fitted as one model.

        The weights average 1 over the training set, so this is an unbiased per-graph mean (unlike
        ``cross_entropy(weight=...)``, which divides by the batch's own weight sum): the mean of two
        half-batches' losses is the whole batch's, as data-parallel training assumes.
        """
        import torch.nn.functional as F

        members = outputs["member_logits"].float()
        losses = F.cross_entropy(members.flatten(0, 1), batch.y.repeat(len(members)), reduction="none")
        if self.class_weights is not None:
            losses = losses * self.class_weights.to(losses.device)[batch.y.repeat(len(members))]
        return losses.mean()

    def attack_probabilities(self, model, loader) -> torch.Tensor:
        """P(attack) per window, in loader order, in float64: a confident model's P(attack) can
        differ from 1 by less than float32 resolves (measured: a GAT student+KD on yaris09 put
        62 % of its calibration windows above 0.999, and a float32 threshold of 1 - 9e-8 could not
        tell its normal windows from attacks; FPR 0.25, in float64 0.04)."""
        import torch

        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            probabilities = [
                torch.softmax(self.outputs(model, batch.to(device))["logits"].double(), -1)[:, 1].cpu() for batch in loader
            ]
        return torch.cat(probabilities) if probabilities else torch.empty(0)

    def requested_outputs(self, model, batch, names):
        """``node_attribution``: each node's share of the window's attack log-odds
        (``gradient_x_input``), differentiable in the model's parameters while it trains, so a
        student can be taught where its teacher looks (``gat-attribution``)."""
        return {"node_attribution": gradient_x_input(model, batch, differentiable=model.training)}

    def node_scores(self, model, batch) -> torch.Tensor:
        """Each node's gradient × input (docs/deployment.md measures how often it names the
        attacked ID). Works inside ``torch.inference_mode``."""
        model.eval()
        return gradient_x_input(model, batch.to(next(model.parameters()).device), differentiable=False)

    def window_embeddings(self, model, batch) -> torch.Tensor:
        """The pooled representation the GAT's classifier decides on."""
        import torch

        model.eval()
        batch = batch.to(next(model.parameters()).device)
        with torch.no_grad():
            return model.embed(batch.x, batch.id_token, batch.edge_index, batch.batch).float()

    def evaluate(self, model, run):
        """Threshold: P(attack) that ``target_fpr`` of validation normal windows reach, with the
        run's ``threshold_headroom`` (``metrics.fitted_thresholds``); then detect on the test split."""
        from kdcore.metrics import evaluate_at_fitted_threshold

        return evaluate_at_fitted_threshold(lambda loader: self.attack_probabilities(model, loader), run,
                                            lambda batch: self.window_embeddings(model, batch),
                                            lambda batch: self.node_scores(model, batch), probabilities=True,
                                            fitted_on=self.window_embedding)


def gradient_x_input(model, batch, differentiable: bool) -> torch.Tensor:
    """Gradient × input of each window's attack log-odds, summed over each node's input — its
    features and its ID embedding: the share of the decision a node carries, to first order.
    ``differentiable``: the result keeps its graph to the model's parameters (a double backward);
    otherwise it is detached."""
    import torch

    with torch.inference_mode(False), torch.enable_grad():
        x = batch.x.clone().requires_grad_(True)  # clones: inference tensors cannot be saved for backward
        id_token = batch.id_token.clone()
        ids = model.id_embedding(id_token)
        if not differentiable:
            ids = ids.detach()
        ids.requires_grad_(True)
        pooled = model.embed(x, id_token, batch.edge_index.clone(), batch.batch.clone(), id_features=ids)
        logits = model.classify(pooled).float()
        gradients = torch.autograd.grad((logits[:, 1] - logits[:, 0]).sum(), [x, ids], create_graph=differentiable)
        attribution = (gradients[0] * x).sum(-1) + (gradients[1] * ids).sum(-1)
    return attribution if differentiable else attribution.detach()


@hookimpl
def kdcore_register_modes(register):
    register(NormalMode)
