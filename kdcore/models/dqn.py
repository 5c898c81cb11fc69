"""The Q-network of the ``fusion`` mode: a small MLP from a window's fusion state to one Q-value per
fusion weight α.

It follows the kdcore model contract (``name``, ``sizes``, ``hparams``, and a constructor that
accepts ``num_node_features``/``num_ids``/``num_classes`` like the graph models) so that the
engine builds, checkpoints and reloads it like any other model. Those three data-dependent
arguments are ignored: the network sees the fusion state, not the graph, and they are left out
of ``hparams``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

STATE_DIM = 5  # the fusion state (see kdcore.plugins.modes.fusion.STATE_FEATURES)
NUM_ACTIONS = 11  # α ∈ {0, 0.1, …, 1}


class DQN(nn.Module):
    """State → Linear/ReLU × ``num_layers`` → Linear → Q-value of each action."""

    name: ClassVar[str] = "dqn"
    gradient_checkpointing: bool = False  # a runtime switch the engine sets on every model; unused here
    sizes: ClassVar[dict[str, dict[str, int]]] = {
        "teacher": {"hidden_channels": 64, "num_layers": 2},
        "student": {"hidden_channels": 32, "num_layers": 2},
    }

    def __init__(
        self,
        num_node_features: int | None = None,  # ignored: the DQN does not see the graph
        num_ids: int | None = None,  # ignored
        num_classes: int = 2,  # ignored
        state_dim: int = STATE_DIM,
        num_actions: int = NUM_ACTIONS,
        hidden_channels: int = 64,
        num_layers: int = 2,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.hparams = dict(
            state_dim=state_dim, num_actions=num_actions, hidden_channels=hidden_channels, num_layers=num_layers
        )
        layers: list[nn.Module] = []
        width = state_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_channels), nn.ReLU()]
            width = hidden_channels
        layers.append(nn.Linear(width, num_actions))
        self.net = nn.Sequential(*layers)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(state)

    @torch.no_grad()
    def greedy(self, state: torch.Tensor) -> torch.Tensor:
        """The index of the best action per state (ties: the lowest index)."""
        return self.net(state).argmax(-1)
