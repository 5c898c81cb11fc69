"""Shared fixtures: a tiny dataset plugin, an engine that knows it, and trained tiny teachers."""

from __future__ import annotations

import logging
import warnings

import pytest

from kdcore import Engine, RunConfig, hookimpl
from kdcore.data.synthetic import SyntheticCAN


class TinyCAN(SyntheticCAN):
    """Few, short windows: enough to train a step and evaluate in well under a second."""

    name = "tiny"
    num_windows = 160
    window_size = 30
    num_ecu_ids = 12


class TinyDatasetPlugin:
    @hookimpl
    def kdcore_register_datasets(self, register):
        register(TinyCAN)


def tiny_config(root, **overrides) -> RunConfig:
    settings = dict(
        dataset="tiny", experiment_root=str(root), max_epochs=1, batch_size=16, progress_bar=False
    )
    settings.update(overrides)
    return RunConfig(**settings)


@pytest.fixture(autouse=True)
def _quiet_lightning():
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"lightning(\.|$)")
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
        yield


@pytest.fixture(scope="session")
def engine() -> Engine:
    return Engine(plugins=[TinyDatasetPlugin()], load_entry_points=False)


@pytest.fixture(scope="session")
def teacher_root(tmp_path_factory, engine):
    """An experiment root holding a VGAE autoencoder teacher and GAT normal/curriculum teachers."""
    root = tmp_path_factory.mktemp("teachers")
    engine.run(tiny_config(root, mode="autoencoder", max_epochs=2))
    engine.run(tiny_config(root, mode="normal", max_epochs=2))
    engine.run(tiny_config(root, mode="curriculum", max_epochs=2))
    return root
