"""The vehicle-agnostic representation: nodes described by their role, and by their vehicle only on that vehicle."""

from __future__ import annotations

import attrs
import numpy as np
import torch
from torch_geometric.data import Batch

from conftest import tiny_capture
from kdcore.data.graphset import drop_profile
from kdcore.data.preprocess import AGNOSTIC_FEATURES, ROLE_FEATURES, ROLES_BEFORE_SEND_PERIOD, UNPROFILED, Preprocessing
from kdcore.data.frames import FrameTable
from kdcore.data.windows import FEATURES, build_window_graphs

WINDOW = 50
ROLE = {name: i for i, name in enumerate(ROLE_FEATURES)}
VEHICLE_BLOCK = slice(len(ROLE_FEATURES), None)
COUNT_DEVIATION = AGNOSTIC_FEATURES.index("count_deviation")


def fitted(representation="agnostic"):
    return Preprocessing.fit(build_window_graphs(tiny_capture(np.random.default_rng(0), 3000), WINDOW, WINDOW), representation)


def prepared(preprocessing, table):
    graphs = build_window_graphs(table, WINDOW, WINDOW)
    return (graphs, *preprocessing.inputs(graphs.x, graphs.can_id, graphs.node_ptr))


def test_agnostic_nodes_describe_their_role_and_on_the_training_vehicle_their_identity():
    preprocessing = fitted()
    assert preprocessing.num_ids == 13 and preprocessing.num_features == len(AGNOSTIC_FEATURES)
    graphs, x, tokens = prepared(preprocessing, tiny_capture(np.random.default_rng(1), 1000))
    assert (tokens == preprocessing.id_token(graphs.can_id)).all() and (tokens > 0).all()
    share = np.add.reduceat(x[:, ROLE["frame_share"]], graphs.node_ptr[:-1])
    np.testing.assert_allclose(share, 1.0, rtol=1e-5)  # the nodes' frame shares make up each window
    first = slice(graphs.node_ptr[0], graphs.node_ptr[1])
    assert x[first, ROLE["priority_rank"]][0] == 0 and x[first, ROLE["priority_rank"]][-1] == 1
    assert (x[:, UNPROFILED] == 0).all()  # the training vehicle: every ID profiled
    np.testing.assert_allclose(x[:, len(ROLE_FEATURES):len(ROLE_FEATURES) + len(FEATURES)], preprocessing.scale(graphs.x), rtol=1e-6)
    assert np.abs(x[:, COUNT_DEVIATION:]).max() < 10 / 3 + 1e-6


def test_a_spoofed_id_deviates_from_its_profile_and_another_vehicle_is_judged_by_roles():
    preprocessing = fitted()
    table = tiny_capture(np.random.default_rng(2), 1000)
    spoofed = table.can_id == 0x100
    spoofed[np.flatnonzero(~spoofed)[::2]] = True  # half the other frames become 0x100's
    graphs, x, _ = prepared(preprocessing, attrs.evolve(table, can_id=np.where(spoofed, 0x100, table.can_id).astype(np.uint32)))
    assert x[graphs.can_id == 0x100, COUNT_DEVIATION].min() > 1.0  # far more frames than 0x100 has in normal traffic

    other = attrs.evolve(table, can_id=(table.can_id + 0x400).astype(np.uint32))
    other.can_id[::25] = table.can_id[::25]  # a few frames of IDs the training vehicle also had
    graphs, x, tokens = prepared(preprocessing, other)
    assert (x[:, UNPROFILED] == 1).all() and (x[:, VEHICLE_BLOCK] == 0).all() and (tokens == 0).all()
    calibrated, _ = preprocessing.calibrated(graphs).inputs(graphs.x, graphs.can_id, graphs.node_ptr)
    np.testing.assert_array_equal(calibrated, x)  # calibrated: judged by roles alone, whatever IDs it shares


def test_without_timestamps_timing_deviations_are_absent_and_the_profile_round_trips():
    table = tiny_capture(np.random.default_rng(3), 2000)
    graphs = build_window_graphs(attrs.evolve(table, timestamps=False), WINDOW, WINDOW)
    preprocessing = Preprocessing.fit(graphs, "agnostic")
    assert np.isnan(preprocessing.profile_mean[:, FEATURES.index("interarrival_mean")]).all()
    again = Preprocessing.from_dict(preprocessing.to_dict())
    x, tokens = again.inputs(graphs.x, graphs.can_id, graphs.node_ptr)
    expected_x, expected_tokens = preprocessing.inputs(graphs.x, graphs.can_id, graphs.node_ptr)
    np.testing.assert_array_equal(x, expected_x)
    assert np.isfinite(x).all() and (tokens == expected_tokens).all()


def test_profile_dropout_makes_whole_windows_look_like_another_vehicle():
    torch.manual_seed(0)
    preprocessing = fitted()
    graphs = build_window_graphs(tiny_capture(np.random.default_rng(4), 2000), WINDOW, WINDOW)
    batch = Batch.from_data_list([preprocessing.apply(graphs)[i] for i in range(len(graphs))])
    dropped_batch = drop_profile(batch, 0.5)
    dropped = dropped_batch.x[:, UNPROFILED] == 1
    windows = batch.batch[dropped].unique()
    assert 0 < len(windows) < len(graphs)
    assert torch.equal(dropped, torch.isin(batch.batch, windows))  # all of a window's nodes, or none
    assert (dropped_batch.x[dropped, UNPROFILED + 1:] == 0).all() and (dropped_batch.id_token[dropped] == 0).all()
    assert torch.equal(dropped_batch.x[:, :UNPROFILED], batch.x[:, :UNPROFILED])
    assert torch.equal(dropped_batch.x[~dropped], batch.x[~dropped]) and (batch.x[:, UNPROFILED] == 0).all()  # the batch given is untouched


def test_send_period_tells_a_flood_from_a_cars_own_fast_id():
    # A car whose 0x260 takes a third of every window at 20 ms; a flood of 0x000 every 0.2 ms; 0x7FF sent once.
    t_fast = np.arange(0, 1.0, 0.020)
    t_slow = np.concatenate([np.arange(0, 1.0, 0.010) + 0.001, np.arange(0, 1.0, 0.010) + 0.002])
    t_flood = 0.5 + np.arange(300) * 0.0002
    timestamp = np.concatenate([t_fast, t_slow, t_flood, [0.2503]])
    can_id = np.concatenate([np.full(len(t_fast), 0x260), np.repeat([0x100, 0x120], len(t_slow) // 2), np.zeros(len(t_flood)), [0x7FF]])
    order = np.argsort(timestamp, kind="stable")
    table = FrameTable.from_frames(timestamp[order], can_id[order].astype(np.uint32), np.full(len(order), 8), np.zeros((len(order), 8)))
    graphs = build_window_graphs(table, WINDOW, WINDOW)
    x, _ = fitted().calibrated(graphs).inputs(graphs.x, graphs.can_id, graphs.node_ptr)
    period = x[:, ROLE["send_period"]]
    fast, flood, once = (graphs.can_id == 0x260), (graphs.can_id == 0), (graphs.can_id == 0x7FF)
    np.testing.assert_allclose(period[fast & (graphs.x[:, FEATURES.index("count")] >= 2)], (np.log10(0.020) + 4) / 4, atol=0.02)
    assert period[flood & (graphs.x[:, FEATURES.index("count")] >= 2)].max() < 0.1 < (np.log10(0.010) + 4) / 4 - 0.05
    assert period[once] >= (np.log10(0.010) + 4) / 4  # once in a window of 10 ms IDs: at least the window's span apart
    assert ROLE["send_period"] < UNPROFILED


def test_a_model_saved_before_send_period_keeps_the_roles_it_was_trained_on():
    saved = fitted().to_dict()
    assert saved["roles"] == list(ROLE_FEATURES)
    del saved["roles"]  # as checkpoints saved before it
    before = Preprocessing.from_dict(saved)
    graphs = build_window_graphs(tiny_capture(np.random.default_rng(5), 1000), WINDOW, WINDOW)
    x, _ = before.inputs(graphs.x, graphs.can_id, graphs.node_ptr)
    now, _ = fitted().inputs(graphs.x, graphs.can_id, graphs.node_ptr)
    assert before.roles == ROLES_BEFORE_SEND_PERIOD and before.num_features == x.shape[1] == len(AGNOSTIC_FEATURES) - 1
    for column, name in enumerate(ROLES_BEFORE_SEND_PERIOD):
        if name in ROLE:  # a role both have: the same values
            np.testing.assert_array_equal(x[:, column], now[:, ROLE[name]])
    gaps = graphs.x[:, FEATURES.index("interarrival_mean")]
    jitter = np.where(gaps > 0, graphs.x[:, FEATURES.index("interarrival_std")] / np.where(gaps > 0, gaps, 1), 0)
    np.testing.assert_allclose(x[:, ROLES_BEFORE_SEND_PERIOD.index("timing_jitter")], np.clip(jitter, 0, 5), rtol=1e-5)
    np.testing.assert_array_equal(x[:, len(ROLES_BEFORE_SEND_PERIOD):], now[:, VEHICLE_BLOCK])


def test_an_id_sent_under_three_times_takes_its_windows_jitter():
    graphs = build_window_graphs(tiny_capture(np.random.default_rng(6), 1000), WINDOW, WINDOW)
    x, _ = fitted().inputs(graphs.x, graphs.can_id, graphs.node_ptr)
    count, jitter = graphs.x[:, FEATURES.index("count")], x[:, ROLE["repeat_jitter"]]
    gaps = graphs.x[:, FEATURES.index("interarrival_mean")]
    own = graphs.x[:, FEATURES.index("interarrival_std")] / np.where(gaps > 0, gaps, 1)
    repeated = count >= 3
    assert repeated.any() and (~repeated).any()
    np.testing.assert_allclose(jitter[repeated], np.clip(own[repeated], 0, 5), rtol=1e-5)
    for window in range(len(graphs)):
        nodes = slice(graphs.node_ptr[window], graphs.node_ptr[window + 1])
        few = ~repeated[nodes]
        if few.any() and repeated[nodes].any():
            values = np.sort(jitter[nodes][repeated[nodes]])
            assert np.all(jitter[nodes][few] == values[(len(values) - 1) // 2])  # the window's (lower) median
