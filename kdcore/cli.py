"""``kdcore``: a thin command-line shell over ``kdcore.Engine``.

User mistakes (``KdcoreError``) print one ``error: ...`` line and exit with status 2.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import attrs
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from kdcore.errors import ConfigError, KdcoreError
from kdcore.incidents import OPEN_AFTER, QUIET_WINDOWS, SURE_MARGIN, IncidentTracker
from kdcore.quiet import quiet_libraries
from kdcore.signals import Stopped, stop_on

app = typer.Typer(
    help="Train and distil graph intrusion detectors for CAN bus; KD is a toggle over any mode.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
DEPRECATED_KD_MODE = "knowledge_distillation"


class Executor(str, Enum):
    sequential = "sequential"
    ray = "ray"


class Distillation(str, Enum):
    with_kd = "with-kd"
    no_kd = "no-kd"


def _engine():
    from kdcore.engine import Engine

    return Engine()


def _plugins():
    """The installed plugins without the engine: listing them imports no training stack."""
    from kdcore.manager import Plugins

    return Plugins()


def _fail(error: Exception) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(2)


def _overrides(
    settings: list[str],
    *,
    config_file: Optional[Path] = None,
    mode: str | None = None,
    kd: str | None = None,
    distillation: Distillation | None = None,
    model: str | None = None,
    teacher: str | None = None,
    dataset: str | None = None,
    data_root: str | None = None,
    model_size: str | None = None,
    experiment_root: str | None = None,
) -> dict[str, Any]:
    """Config overrides from ``--set`` and the named flags (the flags win)."""
    from kdcore.config import parse_override, read_toml

    overrides = dict(parse_override(item) for item in settings)
    if mode == DEPRECATED_KD_MODE:
        file_model = read_toml(config_file).get("model") if config_file else None
        mode = "autoencoder" if (model or overrides.get("model") or file_model) == "vgae" else "normal"
        logging.getLogger("kdcore").warning(
            "--mode knowledge_distillation is deprecated: KD is a toggle over any mode; "
            "using --mode %s --distillation with-kd --model-size student",
            mode,
        )
        if distillation is Distillation.no_kd:
            raise ConfigError("--mode knowledge_distillation contradicts --distillation no-kd")
        distillation = Distillation.with_kd
        model_size = model_size or "student"
    if kd is not None and distillation is Distillation.no_kd:
        raise ConfigError(f"--kd {kd} contradicts --distillation no-kd")
    flags = {
        "mode": mode,
        "model": model,
        "dataset": dataset,
        "data_root": data_root,
        "model_size": model_size,
        "experiment_root": experiment_root,
        "teacher_model_path": teacher,
        "distillation_strategy": kd,
    }
    overrides.update({key: value for key, value in flags.items() if value is not None})
    if kd is not None or distillation is Distillation.with_kd:
        overrides["use_knowledge_distillation"] = True
    elif distillation is Distillation.no_kd:
        overrides["use_knowledge_distillation"] = False
    return overrides


def _config(config_file: Optional[Path], overrides: dict[str, Any]):
    from kdcore.config import load_config

    return load_config(config_file, overrides, overrides_source="the command line")


SHOWN_METRICS = ("accuracy", "precision", "recall", "f1", "auroc", "fpr")
SetOption = typer.Option([], "--set", help="Override a config key: --set max_epochs=1 (repeatable).")
ConfigOption = typer.Option(None, "--config", help="TOML file of config keys.", dir_okay=False)
RayAddressOption = typer.Option(None, "--ray-address", help="With --executor ray: join this running Ray cluster (auto, HOST:PORT); unset: a local Ray instance.")
FormatOption = typer.Option(None, "--format", help="Capture format (default: detected from content).")
BadRowsOption = typer.Option("error", "--on-bad-rows", help="error: stop at the first malformed row; skip: count and skip.")
LayoutOption = typer.Option(
    None, "--layout", dir_okay=False, help="A layout TOML naming the columns of a delimited text capture (docs/formats.md); overrides --format."
)


def _capture_format(capture_format: str | None, layout: Path | None):
    """What --format and --layout ask for: a format name, a layout's format, or None (detect)."""
    if layout is None:
        return capture_format
    from kdcore.data.formats.layout import LayoutFormat, load_layout

    return LayoutFormat(load_layout(layout))


@app.command()
def run(
    mode: str = typer.Option(None, help="Training mode: normal, autoencoder, curriculum, fusion, or a plugin's."),
    kd: str = typer.Option(None, "--kd", help="Distil with this strategy (turns KD on)."),
    distillation: Distillation = typer.Option(None, help="KD toggle; with-kd uses the mode's default strategy."),
    model: str = typer.Option(None, help="Model name (default: the mode's model)."),
    teacher: str = typer.Option(None, help="Teacher checkpoint (default: found in the artifact layout)."),
    dataset: str = typer.Option(None, help="Dataset name (default: synthetic)."),
    data_root: str = typer.Option(None, help="Folder holding the dataset."),
    model_size: str = typer.Option(None, help="teacher or student."),
    experiment_root: str = typer.Option(None, help="Root folder of all artifacts."),
    config_file: Optional[Path] = ConfigOption,
    settings: list[str] = SetOption,
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's checkpoints/last.ckpt."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing", help="Less activation memory, more compute."),
    cache_teacher_outputs: Optional[bool] = typer.Option(
        None, "--cache-teacher-outputs/--no-cache-teacher-outputs",
        help="With KD: run the teacher once over the training graphs, reuse its outputs every epoch (the default).",
    ),
    devices: int = typer.Option(None, help="Devices (processes on CPU) per node, for Lightning."),
    strategy: str = typer.Option(None, help="Lightning's distribution strategy, e.g. ddp (see docs/scaling.md)."),
    num_nodes: int = typer.Option(None, help="Machines, for Lightning's multi-node training."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Train one model, evaluate it, and write its artifacts."""
    quiet_libraries()
    try:
        overrides = _overrides(
            settings, config_file=config_file, mode=mode, kd=kd, distillation=distillation, model=model, teacher=teacher,
            dataset=dataset, data_root=data_root, model_size=model_size, experiment_root=experiment_root,
        )
        if resume:
            overrides["resume"] = True
        if gradient_checkpointing:
            overrides["gradient_checkpointing"] = True
        if cache_teacher_outputs is not None:
            overrides["cache_teacher_outputs"] = cache_teacher_outputs
        scale_out = {"devices": devices, "strategy": strategy, "num_nodes": num_nodes}
        overrides.update({key: value for key, value in scale_out.items() if value is not None})
        with stop_on(signal.SIGINT):  # Ctrl-C: the same clean stop as SIGTERM, not Lightning's exit(1)
            result = _engine().run(_config(config_file, overrides))
    except KdcoreError as error:
        _fail(error)
    if result is None:  # a DDP worker process: rank 0 reports
        return
    if as_json:
        typer.echo(json.dumps({"run_dir": str(result.run_dir), "checkpoint": str(result.checkpoint), **result.metrics}, indent=2))
        return
    metrics = result.metrics
    _print_metrics(f"{metrics['mode']} · {metrics['model']} {metrics['model_size']} · {metrics['distillation']}", metrics)
    console.print(f"params {metrics['params']:,} · latency {metrics['latency_ms_per_graph']:.2f} ms/graph")
    typer.echo(f"artifacts: {result.run_dir}")


def _print_metrics(title: str, metrics: dict[str, Any]) -> None:
    """The metrics of every test set, then over all of them, as one table."""
    table = Table(title=title)
    table.add_column("test set")
    for column in SHOWN_METRICS:
        table.add_column(column, justify="right")
    for name, row in [*metrics["test_sets"].items(), ("all", metrics)]:
        table.add_row(name, *(f"{row[column]:.4f}" for column in SHOWN_METRICS))
    console.print(table)


def _print_alert_metrics(metrics: dict[str, Any]) -> None:
    """How the alerts of every test set localise and merge into incidents, as one table."""
    table = Table(title="alerts", caption="top-1/3: detected attack windows whose top suspects name an attacked ID; "
                  "found: bursts with an incident; delay: windows from a burst's start to its incident (median)")
    table.add_column("test set", no_wrap=True)
    for column in ("top-1", "top-3", "bursts", "found", "per burst", "delay", "false", "false/h"):
        table.add_column(column, justify="right")

    def shown(value, digits=2):
        return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    for name, row in [*metrics["test_sets"].items(), ("all", metrics)]:
        where, incidents = row["localisation"], row["incidents"]
        table.add_row(name, shown(where["top1"]), shown(where["top3"]), shown(incidents["bursts"]), shown(incidents["detected_bursts"]),
                      shown(incidents["incidents_per_burst_median"], 1), shown(incidents["time_to_detect_windows_median"], 1),
                      shown(incidents["false_incidents"]), shown(incidents["false_incidents_per_hour"], 1))
    console.print(table)


@app.command()
def tune(
    mode: str = typer.Option(None, help="Training mode to tune (trained through Lightning: not fusion)."),
    kd: str = typer.Option(None, "--kd", help="Distil with this strategy (turns KD on, and tunes temperature and alpha by default)."),
    model_size: str = typer.Option(None, help="teacher or student."),
    dataset: str = typer.Option(None, help="Dataset name (default: synthetic)."),
    data_root: str = typer.Option(None, help="Folder holding the dataset."),
    experiment_root: str = typer.Option(None, help="Root folder of all artifacts (trials go to tune/STUDY/trial-N/)."),
    trials: int = typer.Option(8, "--trials", min=1, help="Trials the study should hold when this process stops (all processes together)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (default: sqlite:///EXPERIMENT_ROOT/tune/optuna.db)."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name (default: mode, size, KD strategy and dataset)."),
    space: Optional[Path] = typer.Option(None, "--space", dir_okay=False, help="Search space TOML (default: learning rate, and with KD temperature and alpha)."),
    best_out: Optional[Path] = typer.Option(None, "--best-out", help="Where to write the best config TOML (default: EXPERIMENT_ROOT/tune/STUDY/best.toml)."),
    executor: Executor = typer.Option(Executor.sequential, "--executor", help="sequential: trials one after another in this process; ray: --workers Ray tasks share the study."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="With --executor ray: workers taking trials at once (default: as many as the cluster has CPUs for)."),
    ray_address: Optional[str] = RayAddressOption,
    config_file: Optional[Path] = ConfigOption,
    settings: list[str] = SetOption,
) -> None:
    """Search config values with Optuna on the validation split; writes the best config and a report."""
    from kdcore import tune as tuning

    quiet_libraries()
    try:
        overrides = _overrides(settings, config_file=config_file, mode=mode, kd=kd, model_size=model_size, dataset=dataset,
                               data_root=data_root, experiment_root=experiment_root)
        base = _config(config_file, overrides)
        engine = _engine()
        parameters = tuning.load_space(space) if space else tuning.default_space(base)
        name = study or f"{base.mode}-{base.model_size}-{base.distillation_strategy or base.distillation}-{base.dataset}"
        storage = storage or tuning.default_storage(base)
        with stop_on(signal.SIGINT):
            if executor is Executor.ray:
                from kdcore.ray_executor import tune_on_ray

                result = tune_on_ray(tuning.prepare(engine, base), parameters, trials, storage, name, workers=workers, address=ray_address)
            elif workers or ray_address:
                raise ConfigError("--workers and --ray-address need --executor ray")
            else:
                result = tuning.tune(engine, base, parameters, trials, storage, name)
        folder = Path(base.experiment_root) / "tune" / name
        best_out = best_out or folder / "best.toml"
        tuning.write_best_config(result, base, best_out)
        report = tuning.write_tune_report(result, folder / "report")
    except KdcoreError as error:
        _fail(error)
    typer.echo(f"study {name}: {len(result.trials)} trials; best {result.best_trial.number}, val_loss {result.best_value:.6g}, "
               + ", ".join(f"{key}={value!r}" for key, value in result.best_trial.params.items()))
    typer.echo(f"best config: {best_out} · report: {report}")


@app.command()
def validate(
    config_file: Optional[Path] = ConfigOption,
    settings: list[str] = SetOption,
) -> None:
    """Check a config against the installed plugins without training."""
    quiet_libraries()
    try:
        plan = _engine().plan(_config(config_file, _overrides(settings, config_file=config_file)))
    except KdcoreError as error:
        _fail(error)
    strategy = plan.strategy.name if plan.strategy else "none"
    typer.echo(f"ok: mode {plan.mode.name}, model {plan.config.model} ({plan.config.model_size}), KD strategy {strategy}")
    if plan.teacher_path:
        typer.echo(f"teacher: {plan.teacher_path}")
    typer.echo(f"artifacts: {plan.layout.root}")


@app.command()
def plugins(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List installed plugins and what they register."""
    try:
        description = _plugins().describe()
    except KdcoreError as error:
        _fail(error)
    if as_json:
        typer.echo(json.dumps(description, indent=2))
        return
    table = Table(title="plugins")
    for column in ("name", "distribution", "version"):
        table.add_column(column)
    table.add_column("status")
    for plugin in description["plugins"]:
        table.add_row(plugin["name"], plugin["distribution"] or "", plugin["version"] or "", "ok")
    for plugin in description["failed"]:
        table.add_row(plugin["name"], plugin["distribution"] or "", plugin["version"] or "", "failed")
    console.print(table)
    for plugin in description["failed"]:
        typer.echo(f"failed: {plugin['name']}: {plugin['reason']}")
    for kind in ("modes", "strategies", "datasets", "models", "formats"):
        console.print(f"{kind}: " + ", ".join(f"{item['name']} ({item['plugin']})" for item in description[kind]))


@app.command(name="list")
def list_(
    compat: bool = typer.Option(False, "--compat", help="Show the mode × strategy compatibility matrix."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """List modes, strategies, datasets, models and capture formats, or which combinations work."""
    try:
        plugins = _plugins()
        description = plugins.describe()
    except KdcoreError as error:
        _fail(error)
    if not compat:
        listing = {kind: [item["name"] for item in description[kind]] for kind in ("modes", "strategies", "datasets", "models", "formats")}
        if as_json:
            typer.echo(json.dumps(listing, indent=2))
        else:
            for kind, names in listing.items():
                typer.echo(f"{kind}: {', '.join(names)}")
        return
    matrix = plugins.compatibility()
    if as_json:
        typer.echo(json.dumps(matrix, indent=2))
        return
    columns = list(next(iter(matrix.values())).keys()) if matrix else []
    table = Table(title="mode × distillation: ✓ trains, ✗ refused (reasons below)")
    table.add_column("mode")
    for column in columns:
        table.add_column(column, justify="center")
    reasons: list[str] = []
    for mode, row in matrix.items():
        cells = []
        for reason in row.values():
            if reason is None:
                cells.append("✓")
            else:
                if reason not in reasons:
                    reasons.append(reason)
                cells.append(f"✗ {reasons.index(reason) + 1}")
        table.add_row(mode, *cells)
    console.print(table)
    for number, reason in enumerate(reasons, 1):
        console.print(f"{number}. {reason}", highlight=False)


@app.command()
def report(
    experiment_root: Path = typer.Option(Path("experiments"), "--experiment-root", help="Root folder of all artifacts."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default: EXPERIMENT_ROOT/report)."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
) -> None:
    """Compare every complete run in tables (Markdown, CSV, JSON) and plots, in one report.md."""
    from kdcore.report import COLUMNS, TEXT_COLUMNS, collect_runs, write_report

    try:
        rows = collect_runs(experiment_root)
        written = write_report(experiment_root, out, rows)
    except KdcoreError as error:
        _fail(error)
    if as_json:
        typer.echo(json.dumps([{key: row.get(key) for key in (*COLUMNS, "run_dir")} for row in rows], indent=2))
        return
    table = Table(title=f"runs under {experiment_root}", box=box.SIMPLE_HEAD)
    for column, heading in COLUMNS.items():
        table.add_column(heading, justify="left" if column in TEXT_COLUMNS else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in COLUMNS))
    Console(width=max(console.width, 120)).print(table)
    typer.echo(f"report: {written}")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _seed_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds expects integers separated by commas, got {text!r}") from None


def _took(result) -> str:
    return f"{result.seconds:6.1f} s  " if result.seconds is not None else ""


@app.command()
def pipeline(
    dataset: str = typer.Option("synthetic", "--dataset", help="Dataset to study."),
    datasets: Optional[str] = typer.Option(None, "--datasets", help="Several datasets, comma-separated (overrides --dataset)."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="The dataset folder; with --datasets, the folder holding one folder per dataset."),
    experiment_root: Optional[str] = typer.Option(None, "--experiment-root", help="Root folder of all artifacts."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Run the study once per seed, comma-separated (config key seeds); the report aggregates them."),
    executor: Executor = typer.Option(Executor.sequential, "--executor", help="sequential: one stage after another here; ray: independent stages at once as Ray tasks (pip install 'kdcore[ray]')."),
    ray_address: Optional[str] = RayAddressOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the stages in order, and which are complete, without running."),
    config_file: Optional[Path] = ConfigOption,
    settings: list[str] = SetOption,
) -> None:
    """The whole study: teachers → students with and without KD → fusion → report; complete stages are skipped."""
    from kdcore.pipeline import Pipeline, study_stages

    quiet_libraries()
    names = [name.strip() for name in (datasets or dataset).split(",") if name.strip()]
    try:
        overrides = _overrides(settings, config_file=config_file, experiment_root=experiment_root)
        if seeds is not None:
            overrides["seeds"] = _seed_list(seeds)
        base = _config(config_file, overrides)
        stages = study_stages(base, names)
        if data_root:
            stages = [
                attrs.evolve(s, config=attrs.evolve(s.config, data_root=str(Path(data_root) / s.config.dataset) if len(names) > 1 else data_root))
                if s.config is not None else s
                for s in stages
            ]
        runner = Pipeline(_engine(), stages, base.experiment_root)
        width = max(28, *(len(stage.name) for stage in stages))
        if dry_run:
            for number, result in enumerate(runner.dry_run(), 1):
                needs = f"  (after {', '.join(result.stage.needs)})" if result.stage.needs and result.stage.config else ""
                typer.echo(f"{number:2d}. {result.stage.name:<{width}} {result.status:<9} {result.detail}{needs}")
            return
        if executor is Executor.ray:
            from kdcore.ray_executor import RayExecutor

            runner = RayExecutor(runner, address=ray_address)
        elif ray_address:
            raise ConfigError("--ray-address needs --executor ray")
        def report(result) -> None:
            typer.echo(f"{result.stage.name:<{width}} {result.status:<19} {_took(result)}{result.detail}")

        with stop_on(signal.SIGINT):
            if executor is Executor.ray:  # stages run at once: say which were handed to Ray
                results = runner.run(report, on_start=lambda stage: typer.echo(f"{stage.name:<{width}} submitted"))
            else:
                results = runner.run(report)
    except KdcoreError as error:
        _fail(error)
    bad = [r for r in results if r.status in ("failed", "blocked")]
    if bad:
        typer.echo(f"{len(bad)} stage(s) did not complete: {', '.join(r.stage.name for r in bad)}", err=True)
        raise typer.Exit(1)


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="A kdcore checkpoint of a GAT, a VGAE or a fused detector (models/{model}_{mode}.pth)."),
    format: str = typer.Option("onnx", "--format", help="onnx or torchscript."),
    out: Path = typer.Option(..., "--out", help="The file to write."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Export a model for deployment, checked against PyTorch on sample windows."""
    from kdcore.export import export_checkpoint

    quiet_libraries()
    try:
        report = export_checkpoint(checkpoint, format, out)
    except KdcoreError as error:
        _fail(error)
    result = {"file": str(report.path), "format": report.format, "bytes": report.bytes,
              "max_abs_diff": report.max_abs_diff, "windows_checked": report.windows}
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"{report.format}: {report.path} ({report.bytes:,} bytes); max |difference| vs PyTorch "
               f"{report.max_abs_diff:.2g} over {report.windows} windows")


@app.command()
def evaluate(
    model: Path = typer.Argument(..., help="A kdcore checkpoint of a GAT, a VGAE or a fused detector."),
    data: list[Path] = typer.Argument(..., help="Labelled captures, folders of them, or can-train-and-test dataset folders."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write metrics.json and scores.npz into this folder."),
    capture_format: Optional[str] = FormatOption,
    layout: Optional[Path] = LayoutOption,
    on_bad_rows: str = BadRowsOption,
    as_json: bool = typer.Option(False, "--json", help="Print only the metrics, as JSON (progress goes to stderr)."),
    open_after: int = typer.Option(OPEN_AFTER, "--open-after", min=1, help="As in detect: alerting windows in a row that open an incident."),
    quiet_windows: int = typer.Option(QUIET_WINDOWS, "--quiet-windows", min=1, help="As in detect: windows without an alert that close an incident."),
    sure_margin: float = typer.Option(SURE_MARGIN, "--sure-margin", min=0, help="As in detect: score spreads above the threshold at which one window opens an incident."),
) -> None:
    """Score a trained model on labelled data it was not trained with: metrics overall and per test set."""
    from rich.progress import track

    from kdcore.atomic import atomic_write_text
    from kdcore.detect import Detector
    from kdcore.engine import save_window_scores
    from kdcore.evaluate import evaluate as evaluate_model

    quiet_libraries()
    progress_console = Console(stderr=True)
    try:
        detector = Detector(model)
        metrics, windows = evaluate_model(
            detector, data, _capture_format(capture_format, layout), on_bad_rows,
            lambda sets: track(sets, description="evaluating", console=progress_console, transient=True),
            IncidentTracker(open_after, quiet_windows, sure_margin),
        )
    except KdcoreError as error:
        _fail(error)
    config = detector.config
    metrics = {"checkpoint": str(model), "model": config.get("model"), "model_size": config.get("model_size"),
               "mode": config.get("mode"), "trained_on": config.get("dataset"), "data": [str(path) for path in data], **metrics}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        save_window_scores(out / "scores.npz", windows, detector.threshold)
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    if as_json:
        typer.echo(json.dumps(metrics, indent=2, sort_keys=True))
        return
    _print_metrics(f"{metrics['model']} {metrics['model_size']} ({metrics['mode']}) · threshold {detector.threshold:.4g}", metrics)
    _print_alert_metrics(metrics)
    if out is not None:
        typer.echo(f"written: {out / 'metrics.json'}, {out / 'scores.npz'}")


@app.command()
def calibrate(
    model: Path = typer.Argument(..., help="A kdcore checkpoint of a GAT, a VGAE or a fused detector."),
    normal: list[Path] = typer.Option(..., "--normal", help="An attack-free capture of the target vehicle, or a folder of them; repeat for more."),
    out: Path = typer.Option(..., "--out", help="Where to write the calibrated checkpoint (a fused detector's inputs go beside it)."),
    target_fpr: Optional[float] = typer.Option(None, "--target-fpr", help="False-positive rate to fit the threshold at (default: the model's target_fpr)."),
    headroom: Optional[float] = typer.Option(None, "--headroom", help="Score spreads to raise the threshold above the recording's quantile, room for the vehicle's other drives (default 1)."),
    distil: bool = typer.Option(True, "--distil/--no-distil", help="A GAT student+KD first matches its teacher again on the recording (a fused detector's GAT input too); --no-distil keeps the weights."),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="The teacher to distil from (default: the one the student was distilled from in training)."),
    capture_format: Optional[str] = FormatOption,
    layout: Optional[Path] = LayoutOption,
    on_bad_rows: str = BadRowsOption,
    as_json: bool = typer.Option(False, "--json", help="Print only the calibration record, as JSON."),
) -> None:
    """Fit a trained detector to a vehicle from a short attack-free recording of it (no labels needed)."""
    from rich.console import Console

    from kdcore.calibrate import calibrate as calibrate_model

    quiet_libraries()
    try:
        with Console(stderr=True).status(f"calibrating {model.name}…"):
            record = calibrate_model(model, normal, out, target_fpr, _capture_format(capture_format, layout), on_bad_rows,
                                     headroom=headroom, distil=distil, teacher=teacher)
    except KdcoreError as error:
        _fail(error)
    if as_json:
        typer.echo(json.dumps(record, indent=2, sort_keys=True))
        return
    seconds = f", {record['seconds']:.1f} s of traffic" if record["seconds"] is not None else ""
    if record.get("shared_stamps") is not None:  # what detect compares its traffic's with: another logger's is warned of
        seconds += f", {100 * record['shared_stamps']:.0f} % of frames stamped as the one before"
    radius = f" ×{record['class_radius_scale']:.2f}" if "class_radius_scale" in record else ""
    fitted = [f"{item}{radius}" if item == "attack-class radius" else item for item in record["fitted"]]
    typer.echo(f"calibrated on {record['frames']:,} frames ({record['windows']} windows{seconds}): "
               f"{', '.join(fitted)}; threshold {record['threshold']:.4g} at target FPR {record['target_fpr']:g}, "
               f"headroom {record['headroom_spreads']:g} score spreads")
    typer.echo(f"written: {out}")


@app.command()
def detect(
    model: Path = typer.Option(..., "--model", help="A kdcore checkpoint of a GAT, a VGAE or a fused detector."),
    bus: Optional[str] = typer.Option(None, "--bus", help="A python-can bus: INTERFACE[:CHANNEL], e.g. virtual:demo or socketcan:can0."),
    replay: Optional[Path] = typer.Option(None, "--replay", help="A capture to replay (any readable format)."),
    layout: Optional[Path] = LayoutOption,
    feed: Optional[Path] = typer.Option(None, "--feed", help="With --bus virtual:CHANNEL: send this capture onto that bus meanwhile (a live demo)."),
    as_fast_as_possible: bool = typer.Option(False, "--as-fast-as-possible", help="Replay or feed without waiting for recorded times."),
    alerts: Optional[Path] = typer.Option(None, "--alerts", help="Write the incident lines (and window lines, --verbose) here as JSON (default: stdout)."),
    idle_timeout: Optional[float] = typer.Option(None, "--idle-timeout", help="With --bus: stop after this many seconds without a frame."),
    open_after: int = typer.Option(OPEN_AFTER, "--open-after", min=1, help="Alerting windows in a row that open an incident."),
    quiet_windows: int = typer.Option(QUIET_WINDOWS, "--quiet-windows", min=1, help="Windows in a row without an alert that close an incident."),
    sure_margin: float = typer.Option(SURE_MARGIN, "--sure-margin", min=0,
                                      help="Score spreads above the threshold at which one alerting window opens an incident alone (inf: never)."),
    verbose: bool = typer.Option(False, "--verbose", help="Also write a line per alerting window, not only when incidents open and close."),
) -> None:
    """Score live or replayed CAN traffic window by window; incidents as JSON lines, then a summary."""
    import threading
    import time

    from kdcore.data.formats import read_capture
    from kdcore.bus import BusEvents, ResilientBus, bus_chunks, feed_bus, open_bus
    from kdcore.detect import Detector, replay_chunks

    quiet_libraries()
    if (bus is None) == (replay is None):
        _fail(KdcoreError("give exactly one of --bus INTERFACE[:CHANNEL] and --replay FILE"))
    if feed is not None and (bus or "").partition(":")[0] != "virtual":
        _fail(KdcoreError("--feed sends frames onto a python-can virtual bus only: use it with --bus virtual:CHANNEL"))
    connections, total, events = [], None, BusEvents()
    stop_feed, feed_done, feeder = threading.Event(), threading.Event(), None
    try:
        detector = Detector(model)
        if replay is not None:
            table = read_capture(replay, _capture_format(None, layout))
            chunks, total = replay_chunks(table, detector.window, real_time=not as_fast_as_possible), len(table)
        else:
            table = read_capture(feed, _capture_format(None, layout)) if feed is not None else None
            connections.append(ResilientBus(lambda: open_bus(bus), events))  # reopened if the bus goes away
            if table is not None:  # listening before the first frame is sent, so none is missed
                connections.append(open_bus(bus, preserve_timestamps=True))
                total = len(table)

                def run_feed():
                    try:
                        feed_bus(connections[1], table, not as_fast_as_possible, stop_feed)
                    finally:
                        feed_done.set()

                feeder = threading.Thread(target=run_feed, name="kdcore-feed", daemon=True)
            chunks = bus_chunks(connections[0], detector.window, idle_limit=idle_timeout, ended=feed_done if feeder else None,
                                events=events)
    except KdcoreError as error:
        for connection in connections:
            connection.shutdown()
        _fail(error)
    status_console = Console(stderr=True)
    sink = alerts.open("w") if alerts else sys.stdout
    of_total = f" of {total:,}" if total else ""
    try:
        with status_console.status(f"listening on {bus}…" if bus else f"replaying {replay}…") as status:
            last_shown = 0.0

            def show(summary, alert):
                nonlocal last_shown
                if time.monotonic() - last_shown >= 0.1:  # live, without rebuilding the line for every window
                    last_shown = time.monotonic()
                    status.update(f"{summary.frames:,}{of_total} frames · {summary.windows:,} windows · "
                                  f"{summary.alert_windows:,} alerting · {summary.incidents:,} incidents")

            if feeder is not None:
                feeder.start()
            summary = detector.detect(chunks, sink, show, verbose, IncidentTracker(open_after, quiet_windows, sure_margin),
                                      source=str(replay) if replay else f"bus {bus}")
    finally:
        stop_feed.set()
        if feeder is not None and feeder.is_alive():
            feeder.join()
        if alerts:
            sink.close()
        for connection in connections:
            connection.shutdown()
    typer.echo(json.dumps({"summary": {**summary.as_dict(), **({"bus": events.as_dict()} if bus else {})}}), err=True)


data_app = typer.Typer(help="Read, inspect, build and generate CAN captures.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("list")
def data_list(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List the datasets and capture formats kdcore knows, and the plugin each comes from."""
    try:
        plugins = _plugins()
        datasets, formats = plugins.datasets, plugins.formats
        listing = {
            "datasets": [{"name": name, "plugin": datasets.owner(name), "description": datasets.description(name)} for name in datasets.names()],
            "formats": [{"name": f.name, "plugin": formats.owner(f.name), "description": f.description} for f in formats],
        }
    except KdcoreError as error:
        _fail(error)
    if as_json:
        typer.echo(json.dumps(listing, indent=2))
        return
    for kind, items in listing.items():
        table = Table(title=kind)
        for column in ("name", "plugin", "description"):
            table.add_column(column)
        for item in items:
            table.add_row(item["name"], item["plugin"], item["description"])
        console.print(table)


@data_app.command("inspect")
def data_inspect(
    path: Path = typer.Argument(..., help="A capture file, a folder of captures, or a can-train-and-test dataset folder."),
    capture_format: Optional[str] = FormatOption,
    layout: Optional[Path] = LayoutOption,
    on_bad_rows: str = typer.Option("skip", "--on-bad-rows", help="skip: count malformed rows and quote the first; error: stop at it."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Detected format, rows, time span, distinct IDs (standard/extended), attack rows by type, bad rows."""
    from kdcore.data.inspect import inspect_path

    try:
        summary = inspect_path(path, _capture_format(capture_format, layout), on_bad_rows)
    except KdcoreError as error:
        _fail(error)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    table = Table(title=str(path), show_header=False)
    for key, value in summary.items():
        table.add_row(key, str(value))
    console.print(table)


@data_app.command("build")
def data_build(
    path: Path = typer.Argument(..., help="A capture file, a folder of captures, or a can-train-and-test dataset folder."),
    window: int = typer.Option(100, "--window", help="Frames per window."),
    stride: int = typer.Option(100, "--stride", help="Frames between window starts."),
    train_stride: Optional[int] = typer.Option(
        None, "--train-stride", help="As the run's train_window_stride: frames between training window starts (default: --stride)."),
    label_threshold: float = typer.Option(0.0, "--label-threshold", help="Attack-frame share above which a window is an attack."),
    capture_format: Optional[str] = FormatOption,
    layout: Optional[Path] = LayoutOption,
    on_bad_rows: str = BadRowsOption,
    graph_node: str = typer.Option("can_id", "--graph-node", help="What a node stands for: can_id, j1939_source or j1939_pgn."),
    cache_dir: Path = typer.Option(Path("experiments/cache/graphs"), "--cache-dir", help="Where built graphs are cached."),
    stream: Optional[bool] = typer.Option(
        None, "--stream/--no-stream",
        help="Read captures in chunks and write graphs to disk as they are built (bounded memory). Default: when the captures add up to more than 64 MiB (KDCORE_STREAM_MIB).",
    ),
    val_fraction: float = typer.Option(0.15, "--val-fraction", help="As the run's val_fraction: the parts it will read."),
    test_fraction: float = typer.Option(0.15, "--test-fraction", help="As the run's test_fraction (captures without the ctt layout)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Build the window graphs of captures into the cache, cut as a run cuts them (so the run reads them)."""
    from rich.progress import track

    from kdcore.data.cache import GraphCache
    from kdcore.data.captures import GraphRecipe, should_stream
    from kdcore.data.formats.layout import load_layout
    from kdcore.data.inspect import build_path, captures_under
    from kdcore.data.windows import GRAPH_NODES

    try:
        train_stride = stride if train_stride is None else train_stride
        if window < 2 or stride < 1 or train_stride < 1:
            raise KdcoreError(f"--window must be >= 2, --stride and --train-stride >= 1, got {window}, {stride} and {train_stride}")
        stream = should_stream(captures_under(path), stream)
        if graph_node not in GRAPH_NODES:
            raise KdcoreError(f"--graph-node must be one of {', '.join(GRAPH_NODES)}, got {graph_node!r}")
        recipe = GraphRecipe(window, stride, label_threshold, capture_format, on_bad_rows, graph_node,
                             layout=load_layout(layout) if layout else None, stream=stream)
        summary = build_path(path, recipe, GraphCache(cache_dir), lambda jobs: track(jobs, description="building graphs", console=Console(stderr=True), transient=True),
                             val_fraction, test_fraction, train_stride)
        summary["streamed"] = stream
    except KdcoreError as error:
        _fail(error)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console.print(
        f"{summary['graphs']} graphs ({summary['attack_graphs']} attack) from {summary['frames']} frames "
        f"in {summary['seconds']:.2f} s; cache: {summary['cache_dir']}"
    )


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "--out", help="Folder to write the can-train-and-test dataset into."),
    frames: Optional[int] = typer.Option(None, "--frames", help="About this many frames in all (default: ~360 k)."),
    attacks: str = typer.Option("dos,fuzzy,spoof", "--attacks", help="Comma-separated: dos, fuzzy, spoof, replay, suspend."),
    seed: int = typer.Option(0, "--seed", help="The vehicle and its recordings."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Generate a synthetic vehicle's captures, with attacks, in the can-train-and-test layout."""
    from kdcore.data.traffic import seconds_for_frames, write_ctt_dataset

    try:
        names = tuple(name.strip() for name in attacks.split(",") if name.strip())
        durations = seconds_for_frames(frames, seed, len(names)) if frames else {}
        summary = write_ctt_dataset(out, seed=seed, attacks=names, **durations)
    except KdcoreError as error:
        _fail(error)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    for folder, figures in summary["folders"].items():
        console.print(f"{folder}: {figures['frames']} frames, {figures['attack_frames']} attack")
    console.print(f"{summary['frames']} frames written to {out}")


@data_app.command("inject")
def data_inject(
    capture: Path = typer.Argument(..., help="An attack-free capture in any known format."),
    attack: str = typer.Option(..., "--attack", help="dos, fuzzy, spoof, replay or suspend."),
    out: Path = typer.Option(..., "--out", help="Folder to write the attacked capture into (ctt layout)."),
    seed: int = typer.Option(0, "--seed", help="Where the attack bursts fall."),
) -> None:
    """Inject labelled attacks into an attack-free capture, real or synthetic."""
    from kdcore.data.traffic import inject_capture

    try:
        written = inject_capture(capture, attack, out, seed)
    except KdcoreError as error:
        _fail(error)
    console.print(f"written: {written}")


def main() -> None:
    """Run the CLI; SIGTERM (and Ctrl-C in ``run`` and ``pipeline``) unwinds and exits 128 + signal."""
    try:
        with stop_on(signal.SIGTERM):
            app()
    except Stopped as stop:
        typer.echo(
            f"stopped by {stop.signal_name}: unfinished files were removed and no unfinished run is marked "
            "complete; `kdcore run ... --resume` continues a run from its last epoch",
            err=True,
        )
        sys.exit(stop.exit_code)
