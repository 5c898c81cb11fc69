"""``synthetic``: a seeded stand-in of in-vehicle CAN traffic, the default needing no download.

ECUs send a fixed set of IDs at their own rates with stable payload profiles; attack windows
carry the three Car-Hacking attacks: DoS (ID 0x000 flooding), fuzzing (random IDs and
payloads) and spoofing (one existing ID with forged payloads). Windows are made directly at
the frame level and go through the same ``window_to_graph`` as real captures.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from kdcore.data.graphs import NUM_NODE_FEATURES, window_to_graph
from kdcore.data.module import DataInfo, GraphDataModule

ATTACK_TYPES = {"normal": 0, "dos": 1, "fuzzy": 2, "spoof": 3}


class SyntheticCAN(GraphDataModule):
    """Windows of synthetic CAN traffic; the default dataset of ``kdcore run`` and ``make demo``."""

    name: ClassVar[str] = "synthetic"
    num_windows: ClassVar[int] = 1500
    window_size: ClassVar[int] = 100
    num_ecu_ids: ClassVar[int] = 40
    attack_share: ClassVar[float] = 0.2
    split: ClassVar[tuple[float, float]] = (0.7, 0.15)  # train, validation; test is the rest

    def load_splits(self):
        rng = np.random.default_rng(self.config.seed)
        ids = np.sort(rng.choice(np.arange(0x050, 0x700), self.num_ecu_ids, replace=False))
        rates = rng.uniform(1.0, 10.0, self.num_ecu_ids)
        rates /= rates.sum()
        profiles = rng.integers(0, 256, (self.num_ecu_ids, 8))
        vocabulary = {int(can_id): index + 1 for index, can_id in enumerate(ids)}

        graphs = []
        kinds = rng.choice(
            [1, 2, 3], self.num_windows, p=[1 / 3] * 3
        ) * (rng.random(self.num_windows) < self.attack_share)
        for kind in kinds:
            which = rng.choice(self.num_ecu_ids, self.window_size, p=rates)
            can_ids = ids[which].copy()
            payload = np.clip(profiles[which] + rng.normal(0, 6, (self.window_size, 8)), 0, 255)
            attacked = self._inject(int(kind), can_ids, payload, rng)
            label = int(attacked.any())
            graphs.append(window_to_graph(can_ids, payload, vocabulary, label, int(kind) if label else 0))

        n_train = int(self.split[0] * len(graphs))
        n_val = int(self.split[1] * len(graphs))
        info = DataInfo(num_node_features=NUM_NODE_FEATURES, num_ids=len(vocabulary) + 1)
        return graphs[:n_train], graphs[n_train : n_train + n_val], graphs[n_train + n_val :], info

    def _inject(self, kind: int, can_ids: np.ndarray, payload: np.ndarray, rng) -> np.ndarray:
        """Overwrite some frames of the window with an attack; returns the attacked-frame mask."""
        n = len(can_ids)
        mask = np.zeros(n, dtype=bool)
        if kind == ATTACK_TYPES["dos"]:
            mask[rng.integers(0, 3) :: 3] = True
            can_ids[mask] = 0x000
            payload[mask] = 0
        elif kind == ATTACK_TYPES["fuzzy"]:
            mask[rng.integers(0, 4) :: 4] = True
            can_ids[mask] = rng.integers(0, 0x800, mask.sum())
            payload[mask] = rng.integers(0, 256, (mask.sum(), 8))
        elif kind == ATTACK_TYPES["spoof"]:
            target = rng.choice(np.unique(can_ids))
            mask = can_ids == target
            payload[mask] = rng.integers(0, 256, 8)
        return mask
