"""``kdcore tune``: an Optuna search over config keys, judged on the validation split only.

Each trial is one ``Engine.run`` of the base config with the trial's values, in its own
``{experiment_root}/tune/{study}/trial-{number}/``. A trial's value is the lowest ``val_loss``
Lightning logged (the mode's task loss on the validation windows): the test sets decide nothing.
Optuna's median pruner stops poor trials at an epoch through ``optuna-integration``'s Lightning
callback. The study lives in ``--storage`` (a local SQLite file by default), so several ``kdcore
tune`` processes, on one machine or many, share one study; ``MaxTrialsCallback`` stops them all
once the study has its number of trials. The best trial is written as a config TOML that ``kdcore
run --config`` and ``kdcore pipeline --config`` accept; ``write_tune_report`` plots the study.

A search space is a TOML table per config key (docs/tuning.md)::

    [learning_rate]
    type = "float"
    low = 1e-4
    high = 1e-2
    log = true

    [window_size]
    type = "categorical"
    choices = [50, 100, 200]
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from lightning.pytorch import Callback

from kdcore.config import FIELD_NAMES, ConfigError, read_toml, write_toml
from kdcore.errors import KdcoreError

if TYPE_CHECKING:
    import optuna

    from kdcore.config import RunConfig
    from kdcore.engine import Engine

KINDS = ("float", "int", "categorical")
NOT_SEARCHED = ("experiment_root", "progress_bar", "seeds")  # where and how trials run
INSTALL = "kdcore tune needs Optuna: pip install 'kdcore[tune]'"


@attrs.frozen
class Parameter:
    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))


def parse_space(table: dict[str, Any], where: str) -> list[Parameter]:
    """Parameters from a TOML mapping ``{key: {type, low, high, log | choices}}``; one-line errors."""
    space = []
    for name, spec in table.items():
        if name not in FIELD_NAMES:
            raise ConfigError(f"{where}: {name!r} is not a config key")
        if name in NOT_SEARCHED:
            raise ConfigError(f"{where}: {name!r} is set by kdcore tune itself, not searched")
        if not isinstance(spec, dict) or spec.get("type") not in KINDS:
            raise ConfigError(f"{where}: [{name}] needs type = one of {', '.join(KINDS)}")
        if spec["type"] == "categorical":
            if not spec.get("choices"):
                raise ConfigError(f"{where}: [{name}] is categorical and needs a non-empty choices list")
            space.append(Parameter(name, "categorical", choices=tuple(spec["choices"])))
            continue
        low, high = spec.get("low"), spec.get("high")
        if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or not low < high:
            raise ConfigError(f"{where}: [{name}] needs numbers low < high, got {low!r} and {high!r}")
        space.append(Parameter(name, spec["type"], float(low), float(high), bool(spec.get("log", False))))
    if not space:
        raise ConfigError(f"{where}: the search space is empty")
    return space


def load_space(path: str | Path) -> list[Parameter]:
    return parse_space(read_toml(path), str(path))


def default_space(config: RunConfig) -> list[Parameter]:
    """The learning rate; with KD also the temperature and α (the plan's 4.0 and 0.7 inside)."""
    space = [Parameter("learning_rate", "float", 1e-4, 2e-2, log=True)]
    if config.use_knowledge_distillation:
        space += [Parameter("distillation_temperature", "float", 1.0, 8.0), Parameter("distillation_alpha", "float", 0.1, 0.9)]
    return space


def trial_config(base: RunConfig, study_name: str, number: int, params: dict[str, Any]) -> RunConfig:
    """The base config with a trial's values, writing into the trial's own folder."""
    root = Path(base.experiment_root) / "tune" / study_name / f"trial-{number}"
    return attrs.evolve(base, **params, experiment_root=str(root), progress_bar=False)


def shared_inputs(engine: Engine, base: RunConfig) -> dict[str, Any]:
    """What every trial reads as the base config would, though it writes elsewhere: the dataset's
    folder (a synthetic one generated once), the graph cache, and with KD the teacher."""
    pinned: dict[str, Any] = {"cache_dir": base.cache_dir or str(Path(base.experiment_root) / "cache" / "graphs")}
    dataset = engine.datasets.get(base.dataset)(base, engine.formats)
    if base.data_root is None and hasattr(dataset, "data_root"):
        pinned["data_root"] = str(dataset.data_root())
    plan = engine.plan(base)  # an unknown mode, a missing teacher or a refused combination fails here, not in every trial
    if plan.teacher_path is not None:
        pinned["teacher_model_path"] = str(plan.teacher_path)
    return pinned


def default_storage(base: RunConfig) -> str:
    return f"sqlite:///{Path(base.experiment_root).resolve() / 'tune' / 'optuna.db'}"


def tune(engine: Engine, base: RunConfig, space: list[Parameter], trials: int, storage: str, study_name: str) -> optuna.Study:
    """Run trials of ``study_name`` in ``storage`` until the study holds ``trials`` finished ones
    (counting those of other processes on the same storage); returns the study."""
    base = prepare(engine, base)
    run_trials(engine, base, space, trials, storage, study_name)
    return finished_study(base, storage, study_name)


def prepare(engine: Engine, base: RunConfig) -> RunConfig:
    """The base config every worker starts from, its shared inputs made once, here."""
    base = attrs.evolve(base, **shared_inputs(engine, base))
    Path(base.experiment_root, "tune").mkdir(parents=True, exist_ok=True)
    return base


def run_trials(engine: Engine, base: RunConfig, space: list[Parameter], trials: int, storage: str, study_name: str) -> None:
    """One worker: take trials of the shared study until it holds ``trials`` finished ones."""
    optuna, PruningCallback = _optuna()
    study = _create_or_load(optuna, study_name, storage, base.seed)

    def objective(trial: optuna.Trial) -> float:
        config = trial_config(base, study_name, trial.number, {p.name: p.suggest(trial) for p in space})
        best = BestValLoss()
        try:
            engine.run(config, callbacks=[PruningCallback(trial, monitor="val_loss"), best])
        except KdcoreError as error:
            raise optuna.TrialPruned(f"the run failed: {error}") from None
        if best.value is None:
            raise KdcoreError(f"mode {base.mode!r} logs no val_loss through Lightning, so kdcore tune cannot judge it")
        return best.value

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    study.optimize(objective, callbacks=[optuna.study.MaxTrialsCallback(trials, states=finished)], n_trials=trials)


def finished_study(base: RunConfig, storage: str, study_name: str) -> optuna.Study:
    """The study once its workers stopped; one with no completed trial is an error naming where its runs are."""
    optuna, _ = _optuna()
    study = optuna.load_study(study_name=study_name, storage=storage)
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        raise KdcoreError(f"study {study_name}: no trial completed ({len(study.trials)} pruned or failed; see their runs under "
                          f"{Path(base.experiment_root) / 'tune' / study_name})")
    return study


def trial_seeded_sampler(optuna, seed: int) -> optuna.samplers.BaseSampler:
    """TPE seeded by ``seed + trial number`` rather than once per process: workers sharing a study
    all start from the same seed, and a TPE seeded once would draw the same values in each of them
    (trials 0 and 1 alike); one worker still repeats its study exactly."""

    class TrialSeeded(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self.samplers: dict[int, optuna.samplers.TPESampler] = {}

        def _for(self, trial) -> optuna.samplers.TPESampler:
            if trial.number not in self.samplers:
                self.samplers[trial.number] = optuna.samplers.TPESampler(seed=seed + trial.number)
            return self.samplers[trial.number]

        def infer_relative_search_space(self, study, trial):
            return self._for(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._for(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study, trial) -> None:
            self._for(trial).before_trial(study, trial)

        def after_trial(self, study, trial, state, values) -> None:
            self._for(trial).after_trial(study, trial, state, values)
            del self.samplers[trial.number]

    return TrialSeeded()


def _create_or_load(optuna, study_name: str, storage: str, seed: int, tries: int = 10):
    """The study, created or joined. Workers started together race to create a new storage's
    tables, and all but one fail; the losers try again once the tables are there."""
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(tries):
        try:
            return optuna.create_study(
                study_name=study_name, storage=storage, direction="minimize", load_if_exists=True,
                sampler=trial_seeded_sampler(optuna, seed), pruner=optuna.pruners.MedianPruner(n_warmup_steps=1),
            )
        except SQLAlchemyError:
            if attempt == tries - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def write_best_config(study: optuna.Study, base: RunConfig, out: str | Path) -> RunConfig:
    """The base config with the best trial's values (its own experiment root kept), as TOML."""
    from kdcore.atomic import atomic_write_text

    config = attrs.evolve(base, **study.best_trial.params)
    atomic_write_text(Path(out), write_toml(config))
    return config


def write_tune_report(study: optuna.Study, out: str | Path) -> Path:
    """``history.png`` (the value of every trial, and the best so far), ``importances.png``
    (how much each parameter explains the value) and ``tune.md``, into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    import optuna.visualization.matplotlib as plots

    from kdcore.atomic import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Study {study.study_name}", "", f"Best trial {study.best_trial.number}: val_loss {study.best_value:.6g}", ""]
    lines += [f"- `{name} = {value!r}`" for name, value in study.best_trial.params.items()] + [""]
    drawings = [("history", plots.plot_optimization_history)]
    if len(study.best_trial.params) > 1 and len([t for t in study.trials if t.value is not None]) > 1:
        drawings.append(("importances", plots.plot_param_importances))
    for name, draw in drawings:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            axis = draw(study)
        axis.figure.savefig(out / f"{name}.png", dpi=110, bbox_inches="tight")
        plt.close(axis.figure)
        lines += [f"![{name}]({name}.png)", ""]
    report = out / "tune.md"
    atomic_write_text(report, "\n".join(lines))
    return report


class BestValLoss(Callback):
    """The lowest ``val_loss`` of a run: a trial's value."""

    def __init__(self):
        self.value: float | None = None

    def on_validation_epoch_end(self, trainer, module) -> None:
        loss = trainer.callback_metrics.get("val_loss")
        if loss is not None and not trainer.sanity_checking:
            self.value = float(loss) if self.value is None else min(self.value, float(loss))


def _optuna():
    try:
        import optuna
        from optuna_integration import PyTorchLightningPruningCallback
    except ImportError:
        raise KdcoreError(INSTALL) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna, PyTorchLightningPruningCallback
