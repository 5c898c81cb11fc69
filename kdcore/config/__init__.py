"""The run configuration: one frozen attrs class, loaded from TOML and overridden from the CLI.

Field names follow the KD refactor plan (``use_knowledge_distillation``, ``teacher_model_path``,
``distillation_temperature``, ``distillation_alpha``). Unknown keys are errors that suggest the
closest known key; values are checked when the config is made, not when training reaches them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import attrs
import cattrs
from attrs import validators as v

from kdcore.data.preprocess import REPRESENTATIONS
from kdcore.data.windows import GRAPH_NODES
from kdcore.errors import ConfigError, closest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MODEL_SIZES = ("teacher", "student")
PRECISIONS = ("auto", "32-true", "16-mixed", "bf16-mixed")
LOGGERS = ("csv", "tensorboard", "mlflow")  # kdcore.tracking builds them


def _positive(instance, attribute, value):
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _unit_interval(instance, attribute, value):
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be in [0, 1], got {value!r}")


def _distinct(instance, attribute, values) -> None:
    if len(set(values)) != len(values):
        raise ValueError(f"{attribute.name} must not repeat a value, got {list(values)!r}")


def _one_of(choices):
    def check(instance, attribute, value):
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {', '.join(choices)}, got {value!r}")

    return check


def _each_one_of(choices):
    def check(instance, attribute, values):
        for value in values:
            if value not in choices:
                suggestion = closest(value, choices)
                hint = f"; did you mean {suggestion!r}?" if suggestion else ""
                raise ValueError(f"{attribute.name} takes names among {', '.join(choices)}, got {value!r}{hint}")

    return check


def _names(value: Any, _type: Any = None) -> tuple[str, ...]:
    """A list of names, or one string of comma-separated names, so that the command line
    needs no TOML quoting: ``--set loggers=csv,tensorboard``."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise TypeError("expected a list of names")
    return tuple(value)


@attrs.frozen(kw_only=True)
class RunConfig:
    """Everything that decides what one ``kdcore run`` trains and where it writes."""

    mode: str = "normal"
    model: str | None = None  # None: the mode's own model (vgae for autoencoder, gat otherwise)
    model_size: str = attrs.field(default="teacher", validator=_one_of(MODEL_SIZES))
    dataset: str = "synthetic"
    data_root: str | None = None
    modality: str = "automotive"
    experiment_root: str = "experiments"
    seed: int = 42
    # ``kdcore pipeline`` only: run the whole study once per seed, each in
    # {experiment_root}/seed-{seed}/, and let the report aggregate them. Empty: once, with ``seed``.
    seeds: tuple[int, ...] = attrs.field(default=(), converter=tuple, validator=_distinct)

    # Data: windows of frames become graphs; see docs/formats.md and docs/datasets.md.
    capture_format: str | None = None  # None: detected from each file's content
    capture_layout: str | None = None  # a layout TOML describing the captures' columns (docs/formats.md); overrides capture_format
    on_bad_rows: str = attrs.field(default="error", validator=_one_of(("error", "skip")))
    window_size: int = attrs.field(default=100, validator=v.ge(2))
    window_stride: int = attrs.field(default=100, validator=_positive)
    # Frames between the starts of the training split's windows (None: window_stride); validation and
    # test windows start window_stride apart, as detect cuts them. Half a window overlaps the training
    # windows: every frame is seen at two places in a window, with twice the windows (and steps) from
    # the same traffic — measured better on ROAD's masquerades, not on the vehicles benchmark's
    # injected attacks nor on J1939 (docs/transfer.md, "Overlapping training windows").
    train_window_stride: int | None = attrs.field(default=None, validator=v.optional(_positive))
    label_threshold: float = attrs.field(default=0.0, validator=_unit_interval)  # attack share above which a window is an attack
    # What a graph node stands for: the CAN ID, or on a J1939 network the sender (source address)
    # or the message (PGN); see kdcore.data.windows.node_keys and docs/datasets.md.
    graph_node: str = attrs.field(default="can_id", validator=_one_of(GRAPH_NODES))
    # How a node is described to the model: "agnostic" (its role in the window, which means the
    # same on any car, plus — on the training vehicle only — its ID, raw features and deviations
    # from its ID's own profile) or "vocabulary" (its ID as a token of the training vehicle's IDs,
    # plus raw features); see kdcore.data.preprocess. The default measured better across vehicles
    # (docs/transfer.md).
    representation: str = attrs.field(default="agnostic", validator=_one_of(REPRESENTATIONS))
    # agnostic: the share of training windows shown without their profile, as a vehicle not yet
    # calibrated looks, so the model learns to judge those by the nodes' roles alone.
    profile_dropout: float = attrs.field(default=0.25, validator=_unit_interval)
    val_fraction: float = attrs.field(default=0.15, validator=_unit_interval)
    test_fraction: float = attrs.field(default=0.15, validator=_unit_interval)  # single captures only
    cache_dir: str | None = None  # None: {experiment_root}/cache/graphs

    # Experiment tracking (docs/tracking.md). The CSV log (logs/metrics.csv), which ``kdcore
    # report`` reads, is always written; "tensorboard" and "mlflow" add those trackers.
    loggers: tuple[str, ...] = attrs.field(default=("csv",), converter=_names, validator=[_distinct, _each_one_of(LOGGERS)])
    tracking_uri: str | None = None  # MLflow's; None: sqlite:///{experiment_root}/mlflow.db

    # Knowledge distillation: a toggle over any mode, not a mode.
    use_knowledge_distillation: bool = False
    distillation_strategy: str | None = None  # None: the mode's default strategy
    teacher_model_path: str | None = None  # None: auto-discovered in the artifact layout
    distillation_temperature: float = attrs.field(default=4.0, validator=_positive)
    distillation_alpha: float = attrs.field(default=0.7, validator=_unit_interval)

    # Training.
    max_epochs: int = attrs.field(default=10, validator=_positive)
    max_steps: int = -1  # -1: no step limit (Lightning's convention)
    batch_size: int = attrs.field(default=32, validator=_positive)
    # With KD, scale batch_size by the plan's factor ratio '<dataset>_kd' / '<dataset>' (about 0.75):
    # room for the teacher and connectors. Factors: kdcore/config/batch_size_factors.json, or this file.
    kd_batch_scaling: bool = True
    batch_size_factors: str | None = None
    learning_rate: float = attrs.field(default=5e-3, validator=_positive)
    weight_decay: float = attrs.field(default=0.0, validator=v.ge(0.0))
    accelerator: str = "auto"
    devices: int = attrs.field(default=1, validator=_positive)  # per node
    strategy: str = "auto"  # Lightning's distribution strategy: auto, ddp, ddp_spawn, ...
    num_nodes: int = attrs.field(default=1, validator=_positive)
    precision: str = attrs.field(default="auto", validator=_one_of(PRECISIONS))
    num_workers: int = attrs.field(default=0, validator=v.ge(0))
    # CPU runs repeat exactly with the same seed on one thread; ``true`` also forces torch's
    # deterministic kernels (for CUDA), which makes PyG's scatter on CPU ~10x slower.
    deterministic: bool = False
    # Intra-op CPU threads while a run trains and evaluates. One thread keeps float sums in one
    # order (same seed, same weights) and keeps runs that share a machine from stalling each
    # other; small graph models lose only ~5-15 % speed. 0: torch's default.
    num_threads: int = attrs.field(default=1, validator=v.ge(0))
    progress_bar: bool = True
    early_stopping_patience: int = attrs.field(default=5, validator=v.ge(0))  # epochs without val_loss gain; 0: off
    resume: bool = False  # continue from the run folder's checkpoints/last.ckpt
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, more time
    gradient_clip_val: float = attrs.field(default=0.0, validator=v.ge(0.0))  # clip the gradient norm; 0: off
    memory_cleanup_every: int = attrs.field(default=20, validator=v.ge(0))  # batches between gc (+ CUDA cache); 0: off
    # Compute the frozen teacher's outputs for the training graphs once and reuse them every epoch:
    # a GAT teacher of five networks run every step made a GAT student+KD epoch 10x a student's.
    cache_teacher_outputs: bool = True
    # With KD, the student also matches its teacher on a copy of each batch with one node per window
    # perturbed by Gaussian noise of this many feature spreads (``graphset.perturb_one_node``); 0: off.
    kd_noise: float = attrs.field(default=0.0, validator=v.ge(0))
    # Supervised modes: each batch also trains, as attacks, a copy of its windows in which a random
    # share of their profiled nodes are moved off their IDs' profiles by this many spreads in a
    # random direction (``graphset.shift_off_normal``): anything off the vehicle's normal traffic is
    # an attack, not only what the trained attacks look like. 0: off (docs/transfer.md).
    synthetic_attacks: float = attrs.field(default=0.0, validator=v.ge(0))

    # Every mode's decision threshold is fitted, not fixed: the score that this share of the
    # validation normal windows reaches (their 1 - target_fpr quantile), raised by up to
    # ``threshold_headroom`` robust spreads of their scores (never past a validation attack it
    # catches) — room for the vehicle's other drives, as ``kdcore calibrate --headroom`` leaves on
    # a recording. Calibration fits both again on a vehicle's own attack-free traffic.
    target_fpr: float = attrs.field(default=0.01, validator=_unit_interval)
    threshold_headroom: float = attrs.field(default=1.0, validator=v.ge(0))

    @property
    def distillation(self) -> str:
        """The plan's path segment: ``with-kd`` or ``no-kd``."""
        return "with-kd" if self.use_knowledge_distillation else "no-kd"

    def to_dict(self) -> dict[str, Any]:
        return _converter.unstructure(self)


attrs.resolve_types(RunConfig)
FIELD_NAMES = tuple(field.name for field in attrs.fields(RunConfig))


def _strict(kind: type, accepts: tuple[type, ...]):
    """A cattrs hook that refuses values of the wrong type instead of coercing them."""

    def structure(value, _type):
        if isinstance(value, bool) and kind is not bool or not isinstance(value, accepts):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return kind(value)

    return structure


_converter = cattrs.Converter(forbid_extra_keys=True)
_converter.register_structure_hook(bool, _strict(bool, (bool,)))
_converter.register_structure_hook(int, _strict(int, (int,)))
_converter.register_structure_hook(float, _strict(float, (int, float)))
_converter.register_structure_hook(str, _strict(str, (str,)))
_converter.register_structure_hook_func(lambda kind: kind == tuple[str, ...], _names)


def _check_keys(data: dict[str, Any], where: str) -> None:
    for key in data:
        if key not in FIELD_NAMES:
            message = f"unknown config key {key!r} in {where}"
            suggestion = closest(key, FIELD_NAMES)
            if suggestion:
                message += f"; did you mean {suggestion!r}?"
            raise ConfigError(message)


def _error_text(error: BaseException) -> str:
    """The innermost message of a (possibly grouped) cattrs/attrs error."""
    while getattr(error, "exceptions", None):  # an ExceptionGroup (a backport's on Python 3.10)
        error = error.exceptions[0]
    return str(error)


def make_config(data: dict[str, Any], where: str = "config") -> RunConfig:
    """Structure a flat mapping into a ``RunConfig``, with one-line errors naming the key."""
    _check_keys(data, where)
    for field in attrs.fields(RunConfig):
        if field.name in data:
            try:
                _converter.structure(data[field.name], field.type)
            except Exception as error:  # noqa: BLE001 - reported as a config error
                raise ConfigError(
                    f"config key {field.name!r} in {where}: cannot use {data[field.name]!r} "
                    f"({_error_text(error)})"
                ) from None
    try:
        return _converter.structure(data, RunConfig)
    except Exception as error:  # noqa: BLE001
        raise ConfigError(f"{where}: {_error_text(error)}") from None


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` from ``--set``; the value is read as a TOML literal, else as a string."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    overrides_source: str = "overrides",
) -> RunConfig:
    """A config from an optional TOML file, with overrides (e.g. from the CLI) on top."""
    data: dict[str, Any] = {}
    if path is not None:
        data.update(read_toml(path))
        _check_keys(data, str(path))
    overrides = overrides or {}
    _check_keys(overrides, overrides_source)
    data.update(overrides)
    return make_config(data, f"{path} with {overrides_source}" if path and overrides else str(path or overrides_source))


def write_toml(config: RunConfig) -> str:
    import tomli_w

    return tomli_w.dumps({k: v for k, v in config.to_dict().items() if v is not None})
