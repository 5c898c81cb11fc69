"""kdcore: train and distil graph intrusion detectors for CAN bus, with KD as a toggle over any mode.

Public API::

    from kdcore import Engine, RunConfig
    result = Engine().run(RunConfig(mode="normal", max_epochs=1))
"""

from importlib.metadata import PackageNotFoundError, version

from kdcore.config import RunConfig, load_config
from kdcore.contracts import DistillationStrategy, Evaluation, KDSupport, TrainingMode
from kdcore.data.module import DataInfo, GraphDataModule
from kdcore.engine import Engine, RunPlan, RunResult
from kdcore.errors import KdcoreError
from kdcore.hookspecs import hookimpl

try:
    __version__ = version("kdcore")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "DataInfo",
    "DistillationStrategy",
    "Engine",
    "Evaluation",
    "GraphDataModule",
    "KDSupport",
    "KdcoreError",
    "RunConfig",
    "RunPlan",
    "RunResult",
    "TrainingMode",
    "__version__",
    "hookimpl",
    "load_config",
]
