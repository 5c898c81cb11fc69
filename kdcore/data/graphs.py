"""One window of CAN frames → one PyG graph, vectorised with numpy.

Nodes are the distinct CAN IDs of the window; directed edges are transitions between
consecutive frames, weighted by how often they occur. Node features (11): the CAN ID scaled
to [0, 1], the mean of each of the 8 payload bytes scaled to [0, 1], the ID's share of the
window's frames, and its mean position in the window.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data

NUM_NODE_FEATURES = 11
MAX_STANDARD_ID = 0x7FF


def window_to_graph(
    can_ids: np.ndarray, payload: np.ndarray, vocabulary: dict[int, int], label: int, attack_type: int = 0
) -> Data:
    """Build the graph of one window; IDs missing from ``vocabulary`` map to index 0 (unseen)."""
    n = len(can_ids)
    unique_ids, node_of_frame, counts = np.unique(can_ids, return_inverse=True, return_counts=True)
    num_nodes = len(unique_ids)
    position = np.arange(n, dtype=np.float64) / max(n - 1, 1)

    byte_sums = np.zeros((num_nodes, 8))
    np.add.at(byte_sums, node_of_frame, payload.astype(np.float64))
    position_sums = np.bincount(node_of_frame, weights=position, minlength=num_nodes)
    x = np.column_stack(
        [
            unique_ids / MAX_STANDARD_ID,
            byte_sums / counts[:, None] / 255.0,
            counts / n,
            position_sums / counts,
        ]
    )

    transitions = node_of_frame[:-1] * num_nodes + node_of_frame[1:]
    edge_keys, edge_counts = np.unique(transitions, return_counts=True)
    edge_index = np.stack([edge_keys // num_nodes, edge_keys % num_nodes])

    return Data(
        x=torch.tensor(x, dtype=torch.float32),
        can_id=torch.tensor([vocabulary.get(int(i), 0) for i in unique_ids], dtype=torch.long),
        edge_index=torch.tensor(edge_index, dtype=torch.long),
        edge_attr=torch.tensor(edge_counts / n, dtype=torch.float32).view(-1, 1),
        y=torch.tensor([label], dtype=torch.long),
        attack_type=torch.tensor([attack_type], dtype=torch.long),
    )
