"""Where a run's artifacts live, and where a teacher is found without being named.

``{experiment_root}/{modality}/{dataset}/{learning_type}/{model}/{model_size}/{with-kd|no-kd}/{mode}/``
holds ``models/{model}_{mode}.pth``, ``config.toml``, ``metrics.json`` and ``logs/``.
``metrics.json`` is written last: a run folder without it is not complete.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from kdcore.config import RunConfig

# The plan's canonical teachers (section 4.3): which learning type and mode trained them.
CANONICAL_TEACHERS = {
    "vgae": ("unsupervised", "autoencoder"),
    "gat": ("supervised", "curriculum"),
}


@attrs.frozen
class RunLayout:
    """The artifact paths of one run."""

    root: Path
    model: str
    mode: str

    @property
    def checkpoint(self) -> Path:
        return self.root / "models" / f"{self.model}_{self.mode}.pth"

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def scores(self) -> Path:
        return self.root / "scores.npz"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def is_complete(self) -> bool:
        return self.metrics.is_file() and self.checkpoint.is_file()


def run_layout(
    config: RunConfig,
    *,
    model: str,
    learning_type: str,
    model_size: str | None = None,
    distillation: str | None = None,
    mode: str | None = None,
) -> RunLayout:
    """The layout for ``config``; keyword overrides address a sibling run (e.g. its teacher)."""
    mode = mode or config.mode
    root = (
        Path(config.experiment_root)
        / config.modality
        / config.dataset
        / learning_type
        / model
        / (model_size or config.model_size)
        / (distillation or config.distillation)
        / mode
    )
    return RunLayout(root=root, model=model, mode=mode)


def teacher_candidates(config: RunConfig, *, model: str, learning_type: str) -> list[Path]:
    """Where a teacher for ``model`` may be, in order: the plan's canonical path, then the
    no-KD teacher trained by the same mode as the student."""
    candidates = []
    if model in CANONICAL_TEACHERS:
        canonical_type, canonical_mode = CANONICAL_TEACHERS[model]
        candidates.append((canonical_type, canonical_mode))
    candidates.append((learning_type, config.mode))
    paths = []
    for teacher_type, teacher_mode in dict.fromkeys(candidates):
        layout = run_layout(
            config,
            model=model,
            learning_type=teacher_type,
            model_size="teacher",
            distillation="no-kd",
            mode=teacher_mode,
        )
        paths.append(layout.checkpoint)
    return paths


def discover_teacher(config: RunConfig, *, model: str, learning_type: str) -> Path | None:
    """The first existing teacher checkpoint among ``teacher_candidates``."""
    for path in teacher_candidates(config, model=model, learning_type=learning_type):
        if path.is_file():
            return path
    return None
