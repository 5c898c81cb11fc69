"""``synthetic``: the embedded default dataset — generated traffic in the can-train-and-test layout.

The first run writes a seeded synthetic vehicle's captures (see ``kdcore.data.traffic``) under
``{experiment_root}/data/synthetic/seed-{seed}/`` (or ``--data-root``), then reads them back
through the same reader and graph path as a real dataset. Later runs reuse the files.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from kdcore.data.captures import CaptureDataset, ctt_folders


class SyntheticCAN(CaptureDataset):
    """Synthetic in-vehicle traffic with DoS, fuzzing and spoofing attacks; needs no download."""

    name: ClassVar[str] = "synthetic"
    generator_options: ClassVar[dict[str, Any]] = {}

    def data_root(self) -> Path:
        root = Path(self.config.data_root or Path(self.config.experiment_root) / "data" / self.name / f"seed-{self.config.seed}")
        if ctt_folders(root) is None:
            generate_into(root, seed=self.config.seed, **self.generator_options)
        return root


def generate_into(root: Path, **options: Any) -> None:
    """Write the dataset to a temporary sibling, then rename it into place (whole or not at all)."""
    from kdcore.data.traffic import write_ctt_dataset

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        write_ctt_dataset(staging, **options)
        if ctt_folders(root) is None:  # another process may have finished first
            shutil.rmtree(root, ignore_errors=True)
            try:
                staging.rename(root)
            except OSError:  # ... or finished just now, between the check and the rename
                if ctt_folders(root) is None:
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
