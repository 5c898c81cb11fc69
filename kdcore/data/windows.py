"""Sliding windows of CAN frames → graphs, for all windows of a capture at once.

One graph per window: nodes are the distinct CAN IDs of the window, directed edges the
transitions between consecutive frames (weighted by their count). Everything is computed with
whole-array numpy operations (one sort, then bincounts): there is no Python loop over frames or
windows, so building graphs costs far less than reading the capture. The same function serves
training, evaluation and streaming detection.

Node features (``FEATURES``), raw and unscaled: the CAN ID, the mean of each of the 8 payload
bytes, the ID's frame count, its mean position in the window, the mean and standard deviation of
its inter-arrival time, the mean standard deviation of its payload bytes, and its mean DLC.

A capture without timestamps has no inter-arrival times: its two timing features are NaN
(absent), never made up from frame positions. Scaling (``kdcore.data.preprocess``) fits on the
values present and puts an absent value at the training mean, so it weighs neither way. Windows
are cut by frame count either way.

What a node stands for is ``GRAPH_NODES``' choice (``RunConfig.graph_node``): the CAN ID by
default; on a J1939 network, the sender (source address) or the message (PGN) — see
``node_keys``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import attrs
import numpy as np

from kdcore.data.frames import FrameTable
from kdcore.data.graphs import WindowGraphs

FEATURES = (
    "can_id",
    *(f"byte_{i}_mean" for i in range(8)),
    "count",
    "position_mean",
    "interarrival_mean",
    "interarrival_std",
    "payload_std",
    "dlc_mean",
)


GRAPH_NODES = ("can_id", "j1939_source", "j1939_pgn")
STANDARD_NODE = np.uint32(0x80000000)  # marks an 11-bit frame's node on a J1939 graph: apart from every SA and PGN


def node_keys(table: FrameTable, graph_node: str = "can_id") -> FrameTable:
    """The table with ``can_id`` replaced by what a graph node stands for.

    ``j1939_source``: the source address (the low 8 bits of a 29-bit ID): one node per ECU that
    sends. ``j1939_pgn``: the parameter group number (bits 8-25, the destination byte cleared for
    PDU1 groups, PF < 240): one node per kind of message, whichever ECU sends it. Frames with an
    11-bit ID are not J1939: they keep their ID, marked with the top bit so that no SA or PGN
    takes their node.
    """
    if graph_node == "can_id":
        return table
    if graph_node not in GRAPH_NODES:
        raise ValueError(f"graph_node must be one of {', '.join(GRAPH_NODES)}, got {graph_node!r}")
    can_id = table.can_id
    if graph_node == "j1939_source":
        key = can_id & np.uint32(0xFF)
    else:
        pdu_format = (can_id >> np.uint32(16)) & np.uint32(0xFF)
        key = (can_id >> np.uint32(8)) & np.uint32(0x3FFFF)
        key = np.where(pdu_format < 240, key & np.uint32(0x3FF00), key).astype(np.uint32)
    return attrs.evolve(table, can_id=np.where(table.extended, key, can_id | STANDARD_NODE))


def window_starts(num_frames: int, window: int, stride: int) -> np.ndarray:
    """Start row of every full window (a partial last window is dropped)."""
    if num_frames < window:
        return np.empty(0, dtype=np.int64)
    return np.arange(0, num_frames - window + 1, stride, dtype=np.int64)


def build_window_graphs(
    table: FrameTable, window: int = 100, stride: int = 100, label_threshold: float = 0.0
) -> WindowGraphs:
    """All full windows of ``table`` as graphs; a window is an attack when more than
    ``label_threshold`` of its frames are attack frames (0: any attack frame)."""
    _check_window(window, stride)
    starts = window_starts(len(table), window, stride)
    num_windows = len(starts)
    if num_windows == 0:
        return WindowGraphs.empty(len(FEATURES), table.attack_names, len(table), table.timestamps)
    if stride == window:
        rows = np.arange(num_windows * window)
    else:
        rows = (starts[:, None] + np.arange(window)).ravel()
    frame_window = np.repeat(np.arange(num_windows, dtype=np.int64), window)
    can_id = table.can_id[rows].astype(np.int64)
    timestamp = table.timestamp[rows]
    payload = table.payload[rows].astype(np.float64)

    # Nodes: one per distinct (window, CAN ID); one stable sort groups each node's frames in time order.
    key = (frame_window << 32) | can_id
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    is_first = np.empty(len(sorted_key), dtype=bool)
    is_first[0] = True
    np.not_equal(sorted_key[1:], sorted_key[:-1], out=is_first[1:])
    node_of_sorted = np.cumsum(is_first) - 1
    num_nodes = int(node_of_sorted[-1]) + 1
    node_of_frame = np.empty_like(node_of_sorted)
    node_of_frame[order] = node_of_sorted
    node_key = sorted_key[is_first]
    node_window = node_key >> 32

    def node_sum(values: np.ndarray) -> np.ndarray:
        return np.bincount(node_of_frame, weights=values, minlength=num_nodes)

    count = np.bincount(node_of_frame, minlength=num_nodes).astype(np.float64)
    # One bincount over (node, byte) bins for all 8 bytes; each bin still sums in frame order.
    byte_bin = (node_of_frame[:, None] * 8 + np.arange(8)).ravel()
    byte_mean = np.bincount(byte_bin, weights=payload.ravel(), minlength=num_nodes * 8).reshape(num_nodes, 8) / count[:, None]
    byte_sq = np.bincount(byte_bin, weights=(payload**2).ravel(), minlength=num_nodes * 8).reshape(num_nodes, 8) / count[:, None]
    payload_std = np.sqrt(np.clip(byte_sq - byte_mean**2, 0, None)).mean(axis=1)
    position = np.tile(np.linspace(0.0, 1.0, window), num_windows)
    position_mean = node_sum(position) / count
    dlc_mean = node_sum(table.dlc[rows].astype(np.float64)) / count

    # Inter-arrival times of each ID inside its window (0 for an ID seen once).
    sorted_time = timestamp[order]
    same_node = ~is_first[1:]
    gap_node = node_of_sorted[1:][same_node]
    gaps = np.diff(sorted_time)[same_node]
    gap_count = np.bincount(gap_node, minlength=num_nodes).astype(np.float64)
    safe = np.maximum(gap_count, 1)
    gap_mean = np.bincount(gap_node, weights=gaps, minlength=num_nodes) / safe
    gap_sq = np.bincount(gap_node, weights=gaps**2, minlength=num_nodes) / safe
    gap_std = np.sqrt(np.clip(gap_sq - gap_mean**2, 0, None))
    if not table.timestamps:  # positions are no clock: timing is absent, not zero
        gap_mean = gap_std = np.full(num_nodes, np.nan)

    x = np.column_stack(
        [node_key & 0xFFFFFFFF, byte_mean, count, position_mean, gap_mean, gap_std, payload_std, dlc_mean]
    ).astype(np.float32)
    node_ptr = np.zeros(num_windows + 1, dtype=np.int64)
    np.cumsum(np.bincount(node_window, minlength=num_windows), out=node_ptr[1:])

    # Edges: transitions between consecutive frames of the same window, counted.
    consecutive = frame_window[1:] == frame_window[:-1]
    edge_key = node_of_frame[:-1][consecutive] * num_nodes + node_of_frame[1:][consecutive]
    edge_key, edge_count = np.unique(edge_key, return_counts=True)
    source, target = edge_key // num_nodes, edge_key % num_nodes
    edge_window = node_window[source]
    edge_ptr = np.zeros(num_windows + 1, dtype=np.int64)
    np.cumsum(np.bincount(edge_window, minlength=num_windows), out=edge_ptr[1:])
    local_offset = node_ptr[edge_window]
    edge_index = np.stack([source - local_offset, target - local_offset]).astype(np.int32)

    # Window labels and attack types.
    attack_frames = np.bincount(frame_window, weights=table.label[rows], minlength=num_windows)
    y = (attack_frames / window > label_threshold) if label_threshold > 0 else attack_frames > 0
    num_types = len(table.attack_names)
    type_counts = np.bincount(
        frame_window * num_types + table.attack_type[rows], minlength=num_windows * num_types
    ).reshape(num_windows, num_types)
    attack_type = np.where(y, type_counts[:, 1:].argmax(axis=1) + 1, 0) if num_types > 1 else np.zeros(num_windows)
    node_attack = np.bincount(node_of_frame, weights=table.label[rows], minlength=num_nodes) > 0  # what localisation is judged on
    attacked_rows = np.flatnonzero(table.label[rows])  # in frame order: each window's first is its first attack frame
    attacked_windows, first_attack = np.unique(frame_window[attacked_rows], return_index=True)
    attack_start = np.full(num_windows, np.nan)  # what time-to-detect counts from
    attack_start[attacked_windows] = timestamp[attacked_rows[first_attack]]

    first, last = starts, starts + window - 1
    return WindowGraphs(
        x=x,
        can_id=(node_key & 0xFFFFFFFF).astype(np.uint32),
        node_ptr=node_ptr,
        edge_index=edge_index,
        edge_attr=(edge_count / window).astype(np.float32),
        edge_ptr=edge_ptr,
        y=y.astype(np.int64),
        attack_type=attack_type.astype(np.uint8),
        time_span=np.stack([table.timestamp[first], table.timestamp[last]], axis=1),
        node_attack=node_attack,
        attack_start=attack_start,
        attack_names=table.attack_names,
        num_frames=len(table),
        timestamps=table.timestamps,
    )


def build_window_graphs_chunked(
    tables: Iterable[FrameTable], window: int = 100, stride: int = 100, label_threshold: float = 0.0
) -> Iterator[WindowGraphs]:
    """``build_window_graphs`` of frames that arrive as consecutive tables, one part per table.

    The parts, concatenated, are the graphs of all the frames built at once: every table handed to
    ``build_window_graphs`` starts on a window start (a multiple of ``stride`` from the first
    frame), and the frames from the first window not yet complete are carried over to the next
    table. Memory follows the largest table, not the capture. A part's ``num_frames`` counts the
    frames its table brought, so the parts' sum is the capture's.
    """
    _check_window(window, stride)
    carried: FrameTable | None = None  # frames from the next window start on
    to_skip = 0  # frames before the next window start that no window covers (stride > window)
    for table in tables:
        arrived = len(table)
        if to_skip:
            dropped = min(to_skip, arrived)
            to_skip -= dropped
            table = table.take(slice(dropped, None))
        if carried is not None and len(carried):
            table = FrameTable.concat([carried, table])
        graphs = build_window_graphs(table, window, stride, label_threshold)
        next_start = len(graphs) * stride
        carried = table.take(slice(next_start, None))
        to_skip += max(next_start - len(table), 0)
        yield attrs.evolve(graphs, num_frames=arrived)


def _check_window(window: int, stride: int) -> None:
    if window < 2 or stride < 1:
        raise ValueError(f"window must be >= 2 and stride >= 1, got {window} and {stride}")
