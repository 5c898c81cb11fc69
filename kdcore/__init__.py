"""kdcore: train and distil graph intrusion detectors for CAN bus, with KD as a toggle over any mode.

Public API::

    from kdcore import Engine, RunConfig
    result = Engine().run(RunConfig(mode="normal", max_epochs=1))

The names below are imported when first used, so ``import kdcore`` (and every command that only
reads data) starts without torch, Lightning or PyG.
"""

from importlib import import_module

from kdcore.errors import KdcoreError
from kdcore.hookspecs import hookimpl

_LAZY = {
    "CanDataset": "kdcore.data.dataset",
    "DataInfo": "kdcore.data.dataset",
    "DistillationStrategy": "kdcore.contracts",
    "Engine": "kdcore.engine",
    "Evaluation": "kdcore.contracts",
    "GraphDataModule": "kdcore.data.module",
    "KDSupport": "kdcore.contracts",
    "Lazy": "kdcore.registry",
    "RunConfig": "kdcore.config",
    "RunPlan": "kdcore.engine",
    "RunResult": "kdcore.engine",
    "TrainingMode": "kdcore.contracts",
    "load_config": "kdcore.config",
}

__all__ = ["KdcoreError", "__version__", "hookimpl", *_LAZY]


def __getattr__(name: str):
    if name == "__version__":
        return _version()
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value  # imported once
        return value
    raise AttributeError(f"module 'kdcore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kdcore")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0"
