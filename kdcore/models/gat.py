"""GAT graph classifier with jumping knowledge."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch_geometric.nn import GATConv, JumpingKnowledge, global_mean_pool

from kdcore.models.checkpointing import run_layer


# Between layers. ReLU let a small student's classifier die: every hidden unit at zero for a whole
# capture, one constant score for its normal and attack windows alike (ROAD, GAT student+KD);
# ELU, as in the GAT paper, keeps a gradient below zero. "relu" is what checkpoints saved
# before this hyperparameter used.
ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU}


class GAT(nn.Module):
    """CAN-ID embedding + node features → stacked GAT layers → JK concat → mean pool → logits.

    With ``members`` > 1 the model is a deep ensemble: that many networks of the same shape
    (``GATNetwork``), initialised apart and each trained on its own loss (``member_logits``), that
    share the ID embedding; a window's logits are their mean. A single GAT trained on a few
    hundred windows is a draw: on ROAD's reverse light one seed's teacher reached F1 0.98, another's
    0.73 on the same data; the mean of several draws is steadier and better than most
    (docs/transfer.md, "A teacher of several GATs").

    With ``context`` each layer also adds a linear map of the window's mean node state to every
    node before its activation, so a node is judged against the whole window and not only its
    neighbours in frame order: a reverse light is legitimate or forged by the gear another ID
    sends, and ROAD's light-off capture ends with the light on while moving, the state the
    light-on capture forges. Measured over seven seeds (docs/transfer.md), a teacher with it took
    the reverse light from 0.85 ± 0.16 / 0.86 ± 0.11 to 0.90 ± 0.07 / 0.90 ± 0.07 (F1 off / on),
    but on another vehicle its scores moved with the whole window from drive to drive (yaris09's
    fuzzing, after calibration, 0.97 / 0.94 / 0.95 → 0.82 / 0.00 / 0.63 on three seeds of five),
    so no size has it by default; checkpoints trained with it load with it.
    """

    name: ClassVar[str] = "gat"
    gradient_checkpointing: bool = False  # a runtime switch, not a hyperparameter
    # The student stays within 7 % of the teacher's parameters for any vocabulary: its fixed part is
    # 6.1 % of one network of the teacher (1.2 % of its five), and its one number per CAN ID is
    # 1/16 = 6.25 % of the teacher's 16 (docs/performance.md, "Model sizes"; tests/test_models_size.py).
    # 24 hidden channels, not 12: distilled from the five networks, the wider student keeps more of
    # its teacher on ROAD's masquerades (docs/transfer.md, "A wider GAT student").
    sizes: ClassVar[dict[str, dict[str, int | str]]] = {
        "teacher": {"hidden_channels": 64, "heads": 4, "num_layers": 3, "embedding_dim": 16, "activation": "elu", "members": 5},
        "student": {"hidden_channels": 24, "heads": 2, "num_layers": 2, "embedding_dim": 1, "activation": "elu"},
    }

    def __init__(
        self,
        num_node_features: int,
        num_ids: int,
        num_classes: int = 2,
        hidden_channels: int = 64,
        heads: int = 4,
        num_layers: int = 3,
        embedding_dim: int = 16,
        dropout: float = 0.2,
        activation: str = "relu",
        context: bool = False,
        members: int = 1,
    ):
        super().__init__()
        self.hparams = dict(
            num_node_features=num_node_features,
            num_ids=num_ids,
            num_classes=num_classes,
            hidden_channels=hidden_channels,
            heads=heads,
            num_layers=num_layers,
            embedding_dim=embedding_dim,
            dropout=dropout,
            activation=activation,
            context=context,
            members=members,
        )
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        if members < 1:
            raise ValueError(f"members must be at least 1, got {members}")
        self.id_embedding = nn.Embedding(num_ids, embedding_dim)
        self.members = nn.ModuleList(
            GATNetwork(num_node_features + embedding_dim, num_classes, hidden_channels, heads, num_layers, dropout, activation, context)
            for _ in range(members)
        )

    def forward(self, x, id_token, edge_index, batch) -> torch.Tensor:
        return self.classify(self.embed(x, id_token, edge_index, batch))

    def member_logits(self, x, id_token, edge_index, batch) -> torch.Tensor:
        """(members, windows, classes): each network's logits, what each is trained on."""
        return self._each_member(self.embed(x, id_token, edge_index, batch))

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """The logits of windows' pooled representations (``embed``): the members' mean."""
        return self._each_member(pooled).mean(0)

    def embed(self, x, id_token, edge_index, batch, id_features: torch.Tensor | None = None) -> torch.Tensor:
        """Each window's pooled node representation, the members' side by side: what the classifier
        decides on. ``id_features`` stands in for the ID embedding's output (attribution
        differentiates with respect to it)."""
        h = torch.cat([x, self.id_embedding(id_token) if id_features is None else id_features], dim=-1)
        checkpointed = self.gradient_checkpointing and self.training
        return torch.cat([member.embed(h, edge_index, batch, checkpointed) for member in self.members], dim=-1)

    def _each_member(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.stack([member.classifier(part) for member, part in zip(self.members, pooled.chunk(len(self.members), -1))])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Checkpoints saved before ``members`` hold one network's weights at the top level: they
        are the first member's."""
        single = tuple(f"{prefix}{name}." for name in ("convs", "contexts", "classifier"))
        for key in [key for key in state_dict if key.startswith(single)]:
            state_dict[f"{prefix}members.0.{key[len(prefix):]}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class GATNetwork(nn.Module):
    """One network of a ``GAT``: its attention layers and classifier, on nodes whose ID embedding
    is already joined to their features."""

    def __init__(self, in_channels: int, num_classes: int, hidden_channels: int, heads: int, num_layers: int,
                 dropout: float, activation: str, context: bool):
        super().__init__()
        self.activation = ACTIVATIONS[activation]()
        self.convs = nn.ModuleList()
        for _ in range(num_layers):
            self.convs.append(GATConv(in_channels, hidden_channels, heads=heads, concat=False, dropout=dropout))
            in_channels = hidden_channels
        self.contexts = nn.ModuleList(nn.Linear(hidden_channels, hidden_channels) for _ in range(num_layers)) if context else None
        self.jump = JumpingKnowledge("cat")
        self.classifier = nn.Sequential(
            nn.Linear(hidden_channels * num_layers, hidden_channels),
            ACTIVATIONS[activation](),
            nn.Dropout(dropout),
            nn.Linear(hidden_channels, num_classes),
        )

    def embed(self, h, edge_index, batch, checkpointed: bool = False) -> torch.Tensor:
        layers = []
        for index, conv in enumerate(self.convs):
            h = run_layer(conv, h, edge_index, checkpointed=checkpointed)
            if self.contexts is not None:
                h = h + self.contexts[index](global_mean_pool(h, batch))[batch]
            h = self.activation(h)
            layers.append(h)
        return global_mean_pool(self.jump(layers), batch)
