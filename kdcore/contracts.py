"""What a training mode and a distillation strategy promise, declared as data.

The engine reads these declarations to refuse an impossible combination (fusion with KD, a
strategy needing outputs a mode does not produce) before it builds a model or reads a byte of
data. Subclass these in a plugin and register the class through the hooks in ``hookspecs``.
Nothing here imports torch: a plugin's classes list themselves without the training stack, and
import it in the methods that train or score.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

if TYPE_CHECKING:
    import lightning as L
    import torch
    from torch import nn

    from kdcore.checkpoint import Checkpoint
    from kdcore.config import RunConfig
    from kdcore.run import Run

# The window representation every built-in mode gave its attack classes until the VGAE's changed:
# the default name, and what classes saved before names were recorded were fitted on.
POOLED_NODES = "pooled nodes"


class KDSupport(str, enum.Enum):
    """Whether a mode can train a student with knowledge distillation."""

    FORBIDDEN = "forbidden"
    OPTIONAL = "optional"
    REQUIRED = "required"


@attrs.frozen
class Evaluation:
    """Test metrics of a trained model (overall and per test set), and what must be saved with it."""

    metrics: dict[str, float]
    extra: dict[str, Any] = attrs.field(factory=dict)
    per_set: dict[str, dict[str, float]] = attrs.field(factory=dict)  # metrics of each named test set
    # Per test set, one entry per window: "score", "label", "attack" (name) — for curves and plots.
    windows: dict[str, dict[str, Any]] = attrs.field(factory=dict)


class TrainingMode:
    """How a model learns: its model, its named outputs, its task loss and its evaluation.

    Class attributes are the contract; the methods are the behaviour. The default ``fit`` trains
    with gradient descent through Lightning, with KD mixed in when a strategy is given.
    """

    name: ClassVar[str]
    kd_support: ClassVar[KDSupport] = KDSupport.OPTIONAL
    provides: ClassVar[tuple[str, ...]] = ()
    # Outputs named in ``provides`` that cost more than a forward pass (a gradient): computed by
    # ``requested_outputs`` only for a strategy that requires them, not on every step.
    on_request: ClassVar[tuple[str, ...]] = ()
    default_strategy: ClassVar[str | None] = None
    model: ClassVar[str]
    learning_type: ClassVar[str]
    train_on_normal_only: ClassVar[bool] = False
    # Trains through Lightning's Trainer, so ``devices``/``strategy``/``num_nodes`` scale it out.
    distributed: ClassVar[bool] = True

    def outputs(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Run the model and name its outputs (those in ``provides`` but not ``on_request``)."""
        raise NotImplementedError

    def requested_outputs(self, model: nn.Module, batch: Any, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """The ``on_request`` outputs ``names``: differentiable in the model's parameters while
        it trains (a student learns from them), detached otherwise (a teacher's)."""
        raise NotImplementedError

    def task_loss(self, outputs: dict[str, torch.Tensor], batch: Any) -> torch.Tensor:
        """The loss the mode trains on without any teacher."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, run: Run) -> Evaluation:
        """Score the trained model on the test split (and fit what must be saved with it)."""
        raise NotImplementedError

    def node_scores(self, model: nn.Module, batch: Any) -> torch.Tensor | None:
        """Per node of ``batch``: how much it drove its window's score, higher meaning more
        suspicious. Alerts rank a window's CAN IDs by it; None: the mode cannot say."""
        return None

    # Names what ``window_embeddings`` returns: attack classes saved with a model are used only
    # on the representation they were fitted on.
    window_embedding: ClassVar[str] = POOLED_NODES

    def window_embeddings(self, model: nn.Module, batch: Any) -> torch.Tensor | None:
        """Per window of ``batch``: the model's representation of it, on which attack classes are
        told apart (``kdcore.classes``); None: the mode has none."""
        return None

    def stale(self, checkpoint: Checkpoint) -> str | None:
        """Why a checkpoint this mode wrote earlier no longer fits this version of it (its scores,
        thresholds or inputs were made another way), or None. ``kdcore pipeline`` runs a stage
        with a stale checkpoint again instead of skipping it."""
        return None

    def accepts_model(self, model_name: str) -> bool:
        """Whether this mode can train that model; by default only its own ``model``."""
        return model_name == self.model

    def check(self, config: RunConfig) -> None:
        """Raise ``KdcoreError`` if a prerequisite is missing; runs before any data is read."""

    def prepare(self, run: Run) -> None:
        """Hook before training, e.g. to load a helper model or configure sampling."""

    def callbacks(self, run: Run) -> list[L.Callback]:
        """Extra Lightning callbacks for this mode."""
        return []

    def trainer_options(self, run: Run) -> dict[str, Any]:
        """Extra keyword arguments for ``lightning.Trainer``."""
        return {}

    def fit(self, run: Run) -> None:
        """Train ``run.model``; the default is Lightning with optional KD."""
        from kdcore.training import fit_with_lightning

        fit_with_lightning(self, run)


class DistillationStrategy:
    """What a student matches of its teacher.

    ``requires`` names the mode outputs both models must provide. ``build_connectors`` makes the
    trainable glue (e.g. a projection) once output dimensions are known; the connectors are
    trained with the student. ``loss_terms`` returns named float32 terms whose sum is the KD loss.

    ``on_recordings``: ``kdcore calibrate`` distils a student of this strategy again, on the new
    vehicle's clean recording, with these terms alone (there are no labels). Off unless a strategy
    turns it on: its terms must hold on unlabelled normal windows of another vehicle.
    """

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    on_recordings: ClassVar[bool] = False

    def build_connectors(
        self, student_dims: dict[str, int], teacher_dims: dict[str, int]
    ) -> nn.ModuleDict:
        from torch import nn

        return nn.ModuleDict()

    def loss_terms(
        self,
        student: dict[str, torch.Tensor],
        teacher: dict[str, torch.Tensor],
        connectors: nn.ModuleDict,
        batch: Any,
        config: RunConfig,
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError
