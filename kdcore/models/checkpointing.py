"""Gradient checkpointing for graph layers: trade recomputation for activation memory."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def run_layer(layer: nn.Module, *inputs: torch.Tensor, checkpointed: bool) -> torch.Tensor:
    """``layer(*inputs)``, recomputed in the backward pass instead of stored when ``checkpointed``."""
    if checkpointed and torch.is_grad_enabled():
        return checkpoint(layer, *inputs, use_reentrant=False)
    return layer(*inputs)
