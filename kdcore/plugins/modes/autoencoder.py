"""``autoencoder``: the VGAE trained on normal windows; attacks are what it reconstructs badly.

torch is imported in the methods that train and score, so listing the mode costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import TYPE_CHECKING

from kdcore.contracts import KDSupport, TrainingMode
from kdcore.errors import CheckpointError
from kdcore.hookspecs import hookimpl

if TYPE_CHECKING:
    import torch

    from kdcore.checkpoint import Checkpoint

# What a VGAE window score is, saved with the model: thresholds fitted on another score do not fit.
SCORE = "standardised-feature-error"
ERROR_SCALE_FLOOR = 0.01  # of the mean feature's error: no feature's error counts more than 100 times the average one


class AutoencoderMode(TrainingMode):
    """Task loss: feature MSE + CAN-ID cross-entropy + neighbourhood BCE + ``kl_weight`` · KL."""

    name = "autoencoder"
    kd_support = KDSupport.OPTIONAL
    provides = ("z", "recon", "canid_logits", "neighbor_logits")
    default_strategy = "vgae-dual-signal"
    model = "vgae"
    learning_type = "unsupervised"
    train_on_normal_only = True
    kl_weight = 0.1
    window_embedding = "top node"

    def outputs(self, model, batch):
        cont_out, canid_logits, neighbor_logits, z, kl_loss = model(batch.x, batch.id_token, batch.edge_index, batch.batch)
        return {"recon": cont_out, "canid_logits": canid_logits, "neighbor_logits": neighbor_logits, "z": z, "kl": kl_loss}

    def task_loss(self, outputs, batch):
        import torch.nn.functional as F

        from kdcore.models.vgae import VGAE

        neighbor_logits = outputs["neighbor_logits"].float()
        targets = VGAE.neighbor_targets(neighbor_logits, batch.edge_index.size(1))
        return (
            F.mse_loss(outputs["recon"].float(), batch.x)
            + F.cross_entropy(outputs["canid_logits"].float(), batch.id_token)
            + F.binary_cross_entropy_with_logits(neighbor_logits, targets)
            + self.kl_weight * outputs["kl"].float()
        )

    def window_scores(self, model, loader) -> torch.Tensor:
        """Anomaly score per window (higher = more anomalous), in loader order."""
        import torch

        model.eval()
        device = next(model.parameters()).device
        scores = []
        with torch.no_grad():
            for batch in loader:
                batch = batch.to(device)
                outputs = self.outputs(model, batch)
                scores.append(graph_scores(outputs, batch.x, model.error_scale, batch.batch, batch.num_graphs).cpu())
        return torch.cat(scores) if scores else torch.empty(0)

    def node_scores(self, model, batch) -> torch.Tensor:
        """Each node's reconstruction error: the window's score is their mean."""
        import torch

        model.eval()
        batch = batch.to(next(model.parameters()).device)
        with torch.no_grad():
            return node_errors(self.outputs(model, batch), batch.x, model.error_scale)

    def window_embeddings(self, model, batch) -> torch.Tensor:
        """The window's most suspicious node (the highest reconstruction error): how each of its
        features errs, signed and in that feature's normal error, and its features themselves.

        An attack shows at the node it strikes, on any vehicle; the mean of a window's latents
        (used before) carried the vehicle more than the attack: measured on vehicles the VGAEs
        were not trained on, it named 0.01-0.43 of yaris09's DoS windows (docs/deployment.md)."""
        import torch

        model.eval()
        batch = batch.to(next(model.parameters()).device)
        with torch.no_grad():
            residual = (batch.x - self.outputs(model, batch)["recon"].float()) / model.error_scale.sqrt()
            top = top_nodes(residual.pow(2).mean(-1), batch.batch, batch.num_graphs)
            return torch.cat([residual[top], batch.x[top]], dim=-1)

    def stale(self, checkpoint):
        """A VGAE trained with another window score: its thresholds do not fit today's."""
        if checkpoint.extra.get("score") == SCORE:
            return None
        return (f"this VGAE was trained with another window score ({checkpoint.extra.get('score', 'with the CAN-ID cross-entropy')}), "
                f"so its thresholds do not fit today's ({SCORE}); train it again")

    def evaluate(self, model, run):
        """The error scale fitted on validation normal windows (``fit_error_scale``), then the
        threshold: the score that ``target_fpr`` of them reach, with the run's ``threshold_headroom``
        (``metrics.fitted_thresholds``); then detect on the test split.

        With the agnostic representation a second scale is fitted on the same windows judged by
        roles alone (``roles_error_scale``, saved in the checkpoint's extra), as another vehicle
        is judged: ``kdcore calibrate`` switches to it, and ``roles_threshold`` is fitted with it.
        """
        import attrs

        from kdcore.data.graphset import drop_profile
        from kdcore.metrics import evaluate_at_fitted_threshold

        datamodule, extra = run.datamodule, {"score": SCORE}
        normal = datamodule.loader(datamodule.normal(datamodule.val_set))
        judging_roles = nullcontext
        if run.config.representation == "agnostic":
            roles_scale = fit_error_scale(self, model, (drop_profile(batch, 1.0) for batch in normal))
            extra["roles_error_scale"] = roles_scale.tolist()
            judging_roles = partial(using_error_scale, model, roles_scale)

        model.error_scale.copy_(fit_error_scale(self, model, normal))
        evaluation = evaluate_at_fitted_threshold(lambda loader: self.window_scores(model, loader), run,
                                                  lambda batch: self.window_embeddings(model, batch),
                                                  lambda batch: self.node_scores(model, batch), judging_roles,
                                                  fitted_on=self.window_embedding)
        return attrs.evolve(evaluation, extra={**evaluation.extra, **extra})


def fit_error_scale(mode: AutoencoderMode, model, loader) -> torch.Tensor:
    """Each feature's mean squared reconstruction error over the nodes of ``loader``'s windows,
    floored at ``ERROR_SCALE_FLOOR`` of the mean feature's.

    Measured on real traffic (docs/transfer.md), the plain error let the features that vary most
    in normal traffic (a node's priority rank, its DLC) drown the one an attack moves: a spoofed
    ID taking half a window's frames changed its frame share by 0.5, yet the window scored as a
    normal one; weighed by each feature's normal error, spoofing on a vehicle the model was not
    trained on went from F1 0.07-0.28 to 0.93-0.99 after calibration.
    """
    import torch

    model.eval()
    device = next(model.parameters()).device
    total, nodes = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(device)
            total = total + ((mode.outputs(model, batch)["recon"].float() - batch.x) ** 2).sum(0)
            nodes += batch.num_nodes
    if nodes == 0:
        raise ValueError("no normal windows to fit the VGAE's error scale on")
    scale = total / nodes
    return scale.clamp_min(ERROR_SCALE_FLOOR * float(scale.mean())).cpu()


@contextmanager
def using_error_scale(model, scale) -> Iterator[None]:
    """``model`` scoring with another error scale for the duration."""
    saved = model.error_scale.clone()
    model.error_scale.copy_(scale)
    try:
        yield
    finally:
        model.error_scale.copy_(saved)


def graph_scores(outputs, x, scale, batch, num_graphs: int) -> torch.Tensor:
    """Per graph: the mean node error (``node_errors``).

    The edge reconstruction is trained but not scored: measured on real traffic with injected
    attacks, attack windows reconstruct their edges *better* than normal ones (a flood or a
    spoofed ID repeats one transition), so adding the edge error ranked attacks below normal
    windows (docs/transfer.md).
    """
    from torch_geometric.utils import scatter

    return scatter(node_errors(outputs, x, scale), batch, dim=0, dim_size=num_graphs, reduce="mean")


def top_nodes(node_scores: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """Index of each graph's highest-scored node (the first of ties)."""
    import torch
    from torch_geometric.utils import scatter

    peak = scatter(node_scores, batch, dim=0, dim_size=num_graphs, reduce="max")
    candidates = torch.where(node_scores == peak[batch], torch.arange(len(node_scores), device=batch.device), len(node_scores))
    return scatter(candidates, batch, dim=0, dim_size=num_graphs, reduce="min")


def node_errors(outputs, x, scale) -> torch.Tensor:
    """Per node: the feature reconstruction error, each feature's squared error divided by its
    ``scale`` (the model's ``error_scale``: its mean on normal windows), averaged.

    The CAN-ID cross-entropy is trained but not scored: on vehicles the model was not trained on
    every token is "unseen", and how surely a student names that token depends on its seed, not
    on the traffic. Measured over 3 seeds x 3 vehicles x 4 attacks x 3 VGAEs, counting it took
    window AUROC down to 0.006 (fuzzing on civic8th) where the feature error alone stays >= 0.67
    everywhere (docs/transfer.md).
    """
    return ((outputs["recon"].float() - x) ** 2 / scale).mean(-1)


def check_score(checkpoint: Checkpoint, path) -> None:
    """Refuse a VGAE whose saved thresholds were fitted on another window score."""
    reason = AutoencoderMode().stale(checkpoint) if checkpoint.model == "vgae" else None
    if reason:
        raise CheckpointError(f"{path}: {reason}")


@hookimpl
def kdcore_register_modes(register):
    register(AutoencoderMode)
