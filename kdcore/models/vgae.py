"""Variational graph autoencoder over window graphs, with the plan's three reconstruction heads."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch_geometric.nn import GATConv
from torch_geometric.utils import negative_sampling

from kdcore.models.checkpointing import run_layer


class VGAE(nn.Module):
    """Encode nodes to a latent ``z``; reconstruct features, CAN IDs and neighbourhoods from it.

    ``forward`` returns the plan's tuple ``(cont_out, canid_logits, neighbor_logits, z, kl_loss)``.
    ``neighbor_logits`` scores the graph's edges followed, in training, by as many sampled
    non-edges; ``neighbor_targets`` gives the matching 1/0 targets.

    With ``tie_canid_head`` the CAN-ID head reuses the input embedding instead of a
    ``Linear(latent_dim, num_ids)`` of its own: ``canid_logits = canid_projection(z) @ id_embedding.weight.T``,
    so each CAN ID costs ``embedding_dim`` parameters instead of ``embedding_dim + latent_dim + 1``.
    The student is tied, the teacher is not (its parameters, and old checkpoints, are as before).

    ``error_scale`` (a buffer, saved with the weights) is each feature's mean squared
    reconstruction error on normal windows, fitted after training: the anomaly score weighs a
    feature's error by how much that feature errs on normal traffic (``kdcore.plugins.modes.autoencoder``).
    """

    name: ClassVar[str] = "vgae"
    gradient_checkpointing: bool = False  # a runtime switch, not a hyperparameter
    # The student stays within 7 % of the teacher's parameters for any vocabulary: its fixed part is
    # ~3 % of the teacher's, and per CAN ID it has 4 (a tied embedding) against the teacher's
    # 16 + 48 + 1 = 65, 6.2 % (docs/performance.md, "Model sizes"; tests/test_models_size.py).
    sizes: ClassVar[dict[str, dict[str, int | bool]]] = {
        "teacher": {"hidden_channels": 96, "latent_dim": 48, "heads": 4, "embedding_dim": 16},
        "student": {"hidden_channels": 12, "latent_dim": 8, "heads": 1, "embedding_dim": 4, "tie_canid_head": True},
    }

    def __init__(
        self,
        num_node_features: int,
        num_ids: int,
        num_classes: int = 2,
        hidden_channels: int = 64,
        latent_dim: int = 32,
        heads: int = 4,
        embedding_dim: int = 16,
        tie_canid_head: bool = False,
    ):
        super().__init__()
        self.hparams = dict(
            num_node_features=num_node_features,
            num_ids=num_ids,
            num_classes=num_classes,
            hidden_channels=hidden_channels,
            latent_dim=latent_dim,
            heads=heads,
            embedding_dim=embedding_dim,
            tie_canid_head=tie_canid_head,
        )
        self.latent_dim = latent_dim
        self.tie_canid_head = tie_canid_head
        self.id_embedding = nn.Embedding(num_ids, embedding_dim)
        self.encoder = GATConv(num_node_features + embedding_dim, hidden_channels, heads=heads, concat=False)
        self.mu = GATConv(hidden_channels, latent_dim, heads=1)
        self.logvar = GATConv(hidden_channels, latent_dim, heads=1)
        self.feature_head = nn.Sequential(
            nn.Linear(latent_dim, hidden_channels), nn.ReLU(), nn.Linear(hidden_channels, num_node_features)
        )
        if tie_canid_head:
            self.canid_projection = nn.Linear(latent_dim, embedding_dim)
        else:
            self.canid_head = nn.Linear(latent_dim, num_ids)
        self.register_buffer("error_scale", torch.ones(num_node_features))

    def forward(self, x, id_token, edge_index, batch=None):
        checkpointed = self.gradient_checkpointing and self.training
        inputs = torch.cat([x, self.id_embedding(id_token)], dim=-1)
        h = torch.relu(run_layer(self.encoder, inputs, edge_index, checkpointed=checkpointed))
        mu, logvar = self.mu(h, edge_index), self.logvar(h, edge_index).clamp(-10, 10)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        kl_loss = -0.5 * torch.mean(torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1))
        pairs = self.neighbor_pairs(edge_index, x.size(0))
        neighbor_logits = (z[pairs[0]] * z[pairs[1]]).sum(dim=-1)
        return self.feature_head(z), self.canid_logits(z), neighbor_logits, z, kl_loss

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A checkpoint saved before ``error_scale`` existed loads with it at ones: such a VGAE can
        still teach a student, and its scores are refused where thresholds matter (``check_score``)."""
        state_dict.setdefault(f"{prefix}error_scale", torch.ones_like(self.error_scale))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def shift_reconstruction(self, feature: int, amount: float) -> None:
        """Move the reconstruction of node feature ``feature`` by ``amount`` (its output bias):
        ``kdcore calibrate`` moves the bus's size onto a new vehicle's."""
        with torch.no_grad():
            self.feature_head[-1].bias[feature] += amount

    def canid_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Scores of every CAN ID for each node, ``(nodes, num_ids)``."""
        if self.tie_canid_head:
            return self.canid_projection(z) @ self.id_embedding.weight.t()
        return self.canid_head(z)

    def neighbor_pairs(self, edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
        """The graph's edges, plus as many sampled non-edges while training."""
        if not self.training:
            return edge_index
        negatives = negative_sampling(edge_index, num_nodes=num_nodes, num_neg_samples=edge_index.size(1))
        return torch.cat([edge_index, negatives], dim=1)

    @staticmethod
    def neighbor_targets(neighbor_logits: torch.Tensor, num_edges: int) -> torch.Tensor:
        targets = torch.zeros_like(neighbor_logits)
        targets[:num_edges] = 1.0
        return targets
