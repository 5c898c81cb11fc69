"""The KD plan's memory measures: batch-size safety factors and periodic memory cleanup.

Knowledge distillation holds a frozen teacher, its activations and the connectors next to the
student, so the plan gives every dataset a smaller batch-size factor with KD than without
(``kdcore/config/batch_size_factors.json``). kdcore's ``batch_size`` is the size chosen for plain
training; with KD it is scaled by ``factor('<dataset>_kd') / factor('<dataset>')``. The other
measures live where they act: fp16/bf16 autocast with KD losses in float32 (``distill.py``), the
teacher in eval mode under ``no_grad`` (``FrozenTeacher``), gradient checkpointing (``models``).
"""

from __future__ import annotations

import gc
import json
import logging
from importlib import resources
from pathlib import Path

import lightning as L
import torch

from kdcore.errors import ConfigError

logger = logging.getLogger("kdcore")

DEFAULT_FACTORS = "kdcore/config/batch_size_factors.json"


def load_factors(path: str | Path | None = None) -> dict[str, float]:
    """Dataset → factor from a JSON object (keys starting with ``_comment`` are ignored)."""
    if path is None:
        text = resources.files("kdcore.config").joinpath("batch_size_factors.json").read_text()
        where = DEFAULT_FACTORS
    else:
        where = str(path)
        try:
            text = Path(path).read_text()
        except OSError as error:
            raise ConfigError(f"batch_size_factors {where}: cannot read ({error.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"batch_size_factors {where}:{error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"batch_size_factors {where}: expected a JSON object of dataset: factor")
    factors = {}
    for key, value in data.items():
        if key.startswith("_comment"):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ConfigError(f"batch_size_factors {where}: {key!r} must be a number in (0, 1], got {value!r}")
        factors[key] = float(value)
    for key in ("_default", "_default_kd"):
        if key not in factors:
            raise ConfigError(f"batch_size_factors {where}: missing {key!r}")
    return factors


def factor_for(factors: dict[str, float], dataset: str, kd: bool) -> float:
    suffix = "_kd" if kd else ""
    return factors.get(f"{dataset}{suffix}", factors[f"_default{suffix}"])


def kd_batch_size(batch_size: int, dataset: str, factors: dict[str, float]) -> int:
    """The batch size for a KD run whose plain run would use ``batch_size``."""
    ratio = factor_for(factors, dataset, kd=True) / factor_for(factors, dataset, kd=False)
    return max(1, round(batch_size * ratio))


def cleanup_memory() -> None:
    """Free unreachable objects now, and the CUDA allocator's unused cached blocks where present."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class MemoryCleanup(L.Callback):
    """``cleanup_memory()`` after every ``every``-th training batch (the plan: every 20).

    The objects alive when training starts (torch, Lightning, the data, the models: ~400 k) are
    frozen out of the garbage collector's reach while it trains, so each collection looks only at
    what training created; a full collection over all of them costs ~0.2 s, more than 20 batches
    of a student.
    """

    def __init__(self, every: int = 20):
        self.every = every
        self.cleanups = 0

    def on_train_start(self, trainer, pl_module) -> None:
        gc.freeze()

    def on_train_end(self, trainer, pl_module) -> None:
        gc.unfreeze()

    def on_exception(self, trainer, pl_module, exception) -> None:
        gc.unfreeze()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx % self.every == 0:
            cleanup_memory()
            self.cleanups += 1
