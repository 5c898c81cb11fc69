"""The state of one run as it moves through the engine: plan → data → model → fit → evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from torch import nn

    from kdcore.config import RunConfig
    from kdcore.contracts import DistillationStrategy, TrainingMode
    from kdcore.data.module import GraphDataModule
    from kdcore.distill import FrozenTeacher
    from kdcore.engine import Engine
    from kdcore.layout import RunLayout


@attrs.define
class Run:
    """Everything a mode needs while it trains; built by ``Engine.run``."""

    engine: Engine
    config: RunConfig
    mode: TrainingMode
    strategy: DistillationStrategy | None
    layout: RunLayout
    teacher_path: Path | None
    datamodule: GraphDataModule | None = None
    model: nn.Module | None = None
    teacher: FrozenTeacher | None = None
    callbacks: list = attrs.Factory(list)  # the caller's own Lightning callbacks, added to the trainer's
