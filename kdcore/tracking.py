"""Lightning loggers for one run: the CSV log, always, and the trackers that ``loggers`` selects.

``logs/metrics.csv`` is an artifact (``kdcore report`` draws the training curves from it), so it
is written whatever ``loggers`` says. TensorBoard and MLflow are for browsing and comparing many
runs; each run carries the tags they group by (mode, model, size, KD strategy, dataset, seed).
See docs/tracking.md.
"""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning.pytorch.utilities.rank_zero import rank_zero_only

from kdcore.errors import ConfigError
from kdcore.lock import waiting_lock

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger

    from kdcore.config import RunConfig
    from kdcore.run import Run

# The modules each tracker needs; the first is the one to install.
PACKAGES = {
    "tensorboard": ("tensorboardX", "tensorboard"),  # Lightning's TensorBoardLogger takes either
    "mlflow": ("mlflow",),
}
SQL_STORE_PACKAGES = ("sqlalchemy", "alembic")  # an sqlite:// store; full mlflow has them, mlflow-skinny not
CURVES = ("train_loss_epoch", "val_loss")  # the metrics TensorBoard's HParams tab sets against each run's config


def check_packages(config: RunConfig) -> None:
    """Stop before any data is read, not after training, when a selected tracker cannot be built."""
    for name in config.loggers:
        needed = PACKAGES.get(name, ())
        if needed and not any(importlib.util.find_spec(module) for module in needed):
            raise ConfigError(f"logger {name!r} needs the {needed[0]} package: pip install 'kdcore[tracking]'")
        if name == "mlflow" and tracking_uri(config).startswith("sqlite:"):
            for module in SQL_STORE_PACKAGES:
                if importlib.util.find_spec(module) is None:
                    raise ConfigError(f"an sqlite MLflow store needs the {module} package: pip install 'kdcore[tracking]'")


def local_store(experiment_root: str | Path) -> str:
    """The default MLflow store: one SQLite file for every run under the experiment root
    (MLflow 3 refuses its old plain-folder store)."""
    path = Path(experiment_root).resolve() / "mlflow.db"
    return f"sqlite:///{path.as_posix()}"


def tracking_uri(config: RunConfig) -> str:
    """Not ``$MLFLOW_TRACKING_URI``: Lightning's MLflow logger sets it for the whole process, so
    the next run in the process would log to the previous run's store."""
    return config.tracking_uri or local_store(config.experiment_root)


def run_tags(run: Run) -> dict[str, str]:
    """What runs are grouped and filtered by, and the artifact folder each came from."""
    config = run.config
    return {
        "mode": config.mode,
        "model": config.model,
        "model_size": config.model_size,
        "kd": config.distillation_strategy if config.use_knowledge_distillation else "none",
        "dataset": config.dataset,
        "seed": str(config.seed),
        "run_dir": str(run.layout.root),
    }


def run_loggers(run: Run) -> list[Logger]:
    """The CSV logger first (``trainer.logger``, and ``kdcore report``'s source), then the trackers."""
    from lightning.pytorch.loggers import CSVLogger

    csv = CSVLogger(run.layout.logs, name="", version="")
    csv.experiment  # noqa: B018 - makes logs/ before TensorBoard's folder lands in it, which Lightning would warn about
    return [csv, *trackers(run)]


def trackers(run: Run) -> list[Logger]:
    """The selected TensorBoard and MLflow loggers, each already holding the run's tags and config."""
    config = run.config
    tags = run_tags(run)
    params = {**config.to_dict(), **tags}
    loggers: list[Logger] = []
    if "tensorboard" in config.loggers:
        from lightning.pytorch.loggers import TensorBoardLogger

        tensorboard = TensorBoardLogger(run.layout.logs, name="tensorboard", version="", default_hp_metric=False)
        _write_hparams(tensorboard, params)
        loggers.append(tensorboard)
    if "mlflow" in config.loggers:
        from lightning.pytorch.loggers import MLFlowLogger

        uri = tracking_uri(config)
        store = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
        # Runs started at once (parallel stages) would race to create the store's tables and the
        # experiment; they are created here, not at the first metric, so a wrong URI fails before training.
        with waiting_lock(store.with_name(f"{store.name}.lock")) if store else contextlib.nullcontext():
            mlflow = MLFlowLogger(
                experiment_name=config.dataset,
                run_name=run.layout.root.relative_to(config.experiment_root).as_posix(),
                tracking_uri=uri,
                tags=tags,
            )
            mlflow.log_hyperparams(params)
        loggers.append(mlflow)
    return loggers


@rank_zero_only
def _write_hparams(logger: Any, params: dict[str, Any]) -> None:
    """TensorBoard's HParams tab: the run's tags and config against its loss curves.

    Lightning's ``log_hyperparams`` writes this summary only when handed metric values, which it
    would log as points of those curves; the curves come anyway, so only their names go in.
    """
    if type(logger.experiment).__module__.startswith("tensorboardX"):
        from tensorboardX.summary import hparams
    else:
        from torch.utils.tensorboard.summary import hparams
    values = {key: value if isinstance(value, (bool, int, float, str)) else str(value) for key, value in params.items()}
    writer = logger.experiment._get_file_writer()
    for summary in hparams(values, dict.fromkeys(CURVES, 0.0)):
        writer.add_summary(summary)


def log_history(run: Run, rows: list[dict[str, float]]) -> None:
    """For a mode that trains without Lightning's Trainer (fusion): its per-epoch rows, as written
    to ``logs/metrics.csv``, to the selected trackers."""
    for logger in trackers(run):
        for row in rows:
            logger.log_metrics({key: value for key, value in row.items() if key != "step"}, step=int(row["step"]))
        logger.finalize("success")
