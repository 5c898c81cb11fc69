"""``fusion``: a DQN agent that fuses, per window, the VGAE anomaly score and the GAT attack probability.

The agent does not see graphs. Two already trained models do: the VGAE (``autoencoder`` mode)
gives each window an anomaly score, the GAT (``curriculum`` or ``normal`` mode) a probability of
attack. The VGAE score is normalised on the validation normal windows to ``v ∈ [0, 1]`` (``0.5``
at the VGAE's own threshold), and a window's *state* is ``(p, v, |2p − 1|, |2v − 1|, agree)``.
The agent's action is a fusion weight ``α ∈ {0, 0.1, …, 1}``; the window's fused score is
``s = α·p + (1 − α)·v`` and the decision is ``s >= threshold`` — never α itself.

Training is a plain torch DQN on the validation split (the inputs never trained on it): episodes
walk the validation windows in time order, the reward is +1 for a right decision and −1 for a
wrong one plus a bonus for the margin of ``s`` on the right side of 0.5, all weighted inversely
to the class frequency; experience replay, a soft-updated target network (double DQN targets),
and ε-greedy exploration with exponential decay. After training, the decision threshold is
fitted on the validation fused scores of the greedy policy; where one input alone validates
better than that, the fused detector defers to it (``fusion.better_input``). KD is forbidden: the inputs are
already distilled (plan §3.3). See docs/fusion.md.
"""

from __future__ import annotations

from kdcore.contracts import KDSupport, TrainingMode
from kdcore.errors import KdcoreError
from kdcore.hookspecs import hookimpl
from kdcore.layout import RunLayout, run_layout
from kdcore.plugins.modes.autoencoder import AutoencoderMode
from kdcore.plugins.modes.normal import NormalMode

ACTIONS: tuple[float, ...] = tuple(i / 10 for i in range(11))  # the fusion weights α the agent chooses from
STATE_FEATURES = ("p_gat", "v_vgae", "gat_confidence", "vgae_confidence", "agreement")
DECISION_LINE = 0.5  # where both inputs put their own threshold once normalised; the reward's decision line


# -- where the inputs are --------------------------------------------------------------------


def input_candidates(config) -> dict[str, list[RunLayout]]:
    """The runs a fusion run may take its VGAE and GAT from, in order of preference.

    ``teacher``: the no-KD VGAE autoencoder teacher; the no-KD GAT teacher of ``curriculum``,
    else of ``normal``. ``student``: the students, with KD preferred to without.
    """
    if config.model_size == "teacher":
        vgae = [("teacher", "no-kd", "autoencoder")]
        gat = [("teacher", "no-kd", "curriculum"), ("teacher", "no-kd", "normal")]
    else:
        vgae = [("student", "with-kd", "autoencoder"), ("student", "no-kd", "autoencoder")]
        gat = [(config.model_size, kd, mode) for kd in ("with-kd", "no-kd") for mode in ("curriculum", "normal")]

    def layouts(model, learning_type, choices):
        return [
            run_layout(config, model=model, learning_type=learning_type, model_size=size, distillation=kd, mode=mode)
            for size, kd, mode in choices
        ]

    return {
        "vgae": layouts("vgae", AutoencoderMode.learning_type, vgae),
        "gat": layouts("gat", NormalMode.learning_type, gat),
    }


def _train_command(config, model: str) -> str:
    mode = "autoencoder" if model == "vgae" else "curriculum"
    size = "" if config.model_size == "teacher" else " --model-size student --distillation with-kd"
    data = f" --data-root {config.data_root}" if config.data_root else ""
    where = f" --experiment-root {config.experiment_root}" if config.experiment_root != "experiments" else ""
    return f"`kdcore run --mode {mode} --dataset {config.dataset}{size}{data}{where}`"


def find_inputs(config) -> dict[str, RunLayout]:
    """The complete VGAE and GAT runs fusion uses; a one-line ``KdcoreError`` naming every path
    looked at and how to train what is missing. Reads no data."""
    found, missing = {}, []
    for model, layouts in input_candidates(config).items():
        complete = [layout for layout in layouts if layout.is_complete()]
        if complete:
            found[model] = complete[0]
        else:
            looked = " or ".join(str(layout.checkpoint) for layout in layouts)
            missing.append(f"no trained {model.upper()} at {looked}; train it with {_train_command(config, model)}")
    if missing:
        size = config.model_size
        raise KdcoreError(f"fusion mode with model_size {size!r} needs a trained VGAE and GAT {size}: " + "; ".join(missing))
    return found


class FusionMode(TrainingMode):
    """DQN fusion of the VGAE and GAT of the same model size; see the module docstring. The work
    is ``kdcore.fusion.FusionTraining``'s, imported when a fusion run starts."""

    name = "fusion"
    kd_support = KDSupport.FORBIDDEN
    distributed = False  # its DQN loop is plain torch in one process
    provides = ()
    default_strategy = None
    model = "dqn"
    learning_type = "fusion"

    def __init__(self):
        self._training = None

    @property
    def training(self):
        if self._training is None:
            from kdcore.fusion import FusionTraining

            self._training = FusionTraining()
        return self._training

    def check(self, config):
        find_inputs(config)

    def stale(self, checkpoint):
        """A fused detector whose VGAE input was normalised under another window score."""
        from kdcore.plugins.modes.autoencoder import SCORE

        if checkpoint.extra.get("fusion", {}).get("vgae", {}).get("score") == SCORE:
            return None
        return f"its VGAE input's scores were normalised under another window score than today's ({SCORE}); train it again"

    def prepare(self, run):
        self.training.prepare(run)

    def fit(self, run):
        self.training.fit(run)

    def evaluate(self, model, run):
        return self.training.evaluate(model, run)


@hookimpl
def kdcore_register_modes(register):
    register(FusionMode)
