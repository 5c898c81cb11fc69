"""Shared fixtures: a tiny dataset plugin, an engine that knows it, and trained tiny teachers."""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings

import pytest

from pathlib import Path

import numpy as np

from kdcore import Engine, RunConfig, hookimpl
from kdcore.data.captures import CaptureDataset
from kdcore.data.formats.writers import write_csv
from kdcore.data.frames import FrameTable


def tiny_capture(rng, frames: int, attack: str | None = None) -> FrameTable:
    """A small vehicle of 12 IDs with stable payloads; attacks overwrite every third frame in bursts."""
    ids = np.arange(0x100, 0x100 + 12 * 16, 16)
    which = rng.integers(0, len(ids), frames)
    can_id = ids[which].copy()
    payload = (which[:, None] * 19 + np.arange(8) * 5) % 256 + rng.integers(0, 3, (frames, 8))
    attacked = np.zeros(frames, dtype=bool)
    if attack is not None:
        attacked = ((np.arange(frames) // 300) % 4 == 0) & (np.arange(frames) % 3 == 0)
        can_id[attacked] = 0 if attack == "dos" else rng.integers(0, 0x7FF, attacked.sum())
        payload[attacked] = 0 if attack == "dos" else rng.integers(0, 256, (attacked.sum(), 8))
    timestamp = np.cumsum(rng.exponential(0.0005, frames))
    return FrameTable.from_frames(timestamp, can_id, np.full(frames, 8), np.clip(payload, 0, 255), label=attacked)


class TinyCAN(CaptureDataset):
    """A tiny can-train-and-test folder: enough windows to train a step and evaluate in a blink."""

    name = "tiny"

    def data_root(self) -> Path:
        root = Path(self.config.experiment_root) / "data" / "tiny"
        if not root.is_dir():  # written aside and renamed: stages running at once may both get here
            rng = np.random.default_rng(0)
            root.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".tiny.", dir=root.parent))
            write_csv(tiny_capture(rng, 3000), staging / "train_01_attack_free" / "normal.csv")
            write_csv(tiny_capture(rng, 3000, "dos"), staging / "train_02_with_attacks" / "dos.csv")
            write_csv(tiny_capture(rng, 1200, "dos"), staging / "test_01_dos" / "dos.csv")
            write_csv(tiny_capture(rng, 1200, "fuzzy"), staging / "test_02_fuzzy" / "fuzzy.csv")
            try:
                staging.rename(root)
            except OSError:
                shutil.rmtree(staging)
        return root


class TinyDatasetPlugin:
    @hookimpl
    def kdcore_register_datasets(self, register):
        register(TinyCAN)


def tiny_config(root, **overrides) -> RunConfig:
    settings = dict(
        dataset="tiny", experiment_root=str(root), max_epochs=1, batch_size=16, progress_bar=False, window_size=50, window_stride=50
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


@pytest.fixture
def ctt_root(tmp_path):
    """A small dataset folder in the can-train-and-test layout, for the file-based datasets."""
    rng = np.random.default_rng(3)
    root = tmp_path / "hcrl_sa"
    write_csv(tiny_capture(rng, 2000), root / "train_01_attack_free" / "a.csv")
    write_csv(tiny_capture(rng, 2000, "dos"), root / "train_02_with_attacks" / "b.csv")
    write_csv(tiny_capture(rng, 1000, "dos"), root / "test_01_dos" / "c.csv")
    write_csv(tiny_capture(rng, 1000, "fuzzy"), root / "test_02_fuzzy" / "d.csv")
    return root


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
