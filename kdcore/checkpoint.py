"""kdcore checkpoints: weights plus what rebuilds the model, loaded without unpickling code.

A checkpoint is a plain ``torch.save`` of a dict of tensors, strings and numbers, read back with
``torch.load(weights_only=True)``: a file that smuggles in a pickled object is refused, never run.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from kdcore.atomic import atomic_open
from kdcore.errors import CheckpointError

FORMAT = "kdcore-checkpoint"
VERSION = 1


@attrs.frozen
class Checkpoint:
    """A model's weights, its registered name and hyperparameters, and the run's config."""

    model: str
    hparams: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any] = attrs.field(factory=dict)
    extra: dict[str, Any] = attrs.field(factory=dict)


def save_checkpoint(path: str | Path, checkpoint: Checkpoint) -> None:
    payload = {"format": FORMAT, "version": VERSION, **attrs.asdict(checkpoint, recurse=False)}
    payload["state_dict"] = {k: t.detach().cpu() for k, t in checkpoint.state_dict.items()}
    with atomic_open(path, "wb") as handle:
        torch.save(payload, handle)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a kdcore checkpoint; any other file gives a one-line ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (expected the zip format torch.save writes)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused: it holds pickled objects other than tensors and plain data, which could run code"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a kdcore checkpoint (expected format {FORMAT!r})")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {payload.get('version')!r} is not supported (expected {VERSION})"
        )
    try:
        return Checkpoint(
            model=payload["model"],
            hparams=payload["hparams"],
            state_dict=payload["state_dict"],
            config=payload.get("config", {}),
            extra=payload.get("extra", {}),
        )
    except KeyError as missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}") from None


def load_weights(path: str | Path, model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load ``state_dict`` strictly; a shape or key mismatch names the file."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        detail = str(error).strip().splitlines()
        reason = detail[1].strip() if len(detail) > 1 else detail[0]
        raise CheckpointError(f"{path}: weights do not fit the model ({reason})") from None
