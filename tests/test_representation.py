"""The vehicle-agnostic representation: nodes described by their role and by their ID's own profile."""

from __future__ import annotations

import attrs
import numpy as np
import torch

from conftest import tiny_capture
from kdcore.data.preprocess import AGNOSTIC_FEATURES, ROLE_FEATURES, UNPROFILED, Preprocessing
from kdcore.data.windows import FEATURES, build_window_graphs
from kdcore.training import drop_profile

WINDOW = 50
ROLE = {name: i for i, name in enumerate(ROLE_FEATURES)}
COUNT_DEVIATION = len(ROLE_FEATURES) + FEATURES.index("count") - 1


def fitted(representation="agnostic"):
    return Preprocessing.fit(build_window_graphs(tiny_capture(np.random.default_rng(0), 3000), WINDOW, WINDOW), representation)


def prepared(preprocessing, table):
    graphs = build_window_graphs(table, WINDOW, WINDOW)
    return graphs, preprocessing.features(graphs.x, graphs.can_id, graphs.node_ptr)


def test_agnostic_nodes_carry_no_id_and_describe_their_role():
    preprocessing = fitted()
    assert preprocessing.num_ids == 1 and preprocessing.num_features == len(AGNOSTIC_FEATURES)
    graphs, x = prepared(preprocessing, tiny_capture(np.random.default_rng(1), 1000))
    assert (preprocessing.tokens(graphs.can_id) == 0).all()
    share = np.add.reduceat(x[:, ROLE["frame_share"]], graphs.node_ptr[:-1])
    np.testing.assert_allclose(share, 1.0, rtol=1e-5)  # the nodes' frame shares make up each window
    first = slice(graphs.node_ptr[0], graphs.node_ptr[1])
    assert x[first, ROLE["priority_rank"]][0] == 0 and x[first, ROLE["priority_rank"]][-1] == 1
    assert (x[:, UNPROFILED] == 0).all()  # the training vehicle: every ID profiled
    assert np.abs(x[:, len(ROLE_FEATURES):]).max() < 10 / 3 + 1e-6


def test_a_spoofed_id_deviates_from_its_profile_and_an_unknown_vehicle_is_judged_by_roles():
    preprocessing = fitted()
    table = tiny_capture(np.random.default_rng(2), 1000)
    spoofed = table.can_id == 0x100
    spoofed[np.flatnonzero(~spoofed)[::2]] = True  # half the other frames become 0x100's
    graphs, x = prepared(preprocessing, attrs.evolve(table, can_id=np.where(spoofed, 0x100, table.can_id).astype(np.uint32)))
    rows = graphs.can_id == 0x100
    assert x[rows, COUNT_DEVIATION].min() > 1.0  # far more frames than 0x100 has in normal traffic

    other = attrs.evolve(table, can_id=(table.can_id + 0x400).astype(np.uint32))
    other.can_id[::25] = table.can_id[::25]  # a few frames of IDs the training vehicle also had
    graphs, x = prepared(preprocessing, other)
    assert (x[:, UNPROFILED] == 1).all() and (x[:, len(ROLE_FEATURES):] == 0).all()


def test_without_timestamps_timing_deviations_are_absent_and_the_profile_round_trips():
    table = tiny_capture(np.random.default_rng(3), 2000)
    untimed = attrs.evolve(table, timestamps=False)
    graphs = build_window_graphs(untimed, WINDOW, WINDOW)
    preprocessing = Preprocessing.fit(graphs, "agnostic")
    assert np.isnan(preprocessing.profile_mean[:, FEATURES.index("interarrival_mean")]).all()
    again = Preprocessing.from_dict(preprocessing.to_dict())
    np.testing.assert_array_equal(again.features(graphs.x, graphs.can_id, graphs.node_ptr),
                                  preprocessing.features(graphs.x, graphs.can_id, graphs.node_ptr))
    assert np.isfinite(again.features(graphs.x, graphs.can_id, graphs.node_ptr)).all()


def test_profile_dropout_makes_whole_windows_look_uncalibrated():
    torch.manual_seed(0)
    preprocessing = fitted()
    graphs, x = prepared(preprocessing, tiny_capture(np.random.default_rng(4), 2000))
    x = torch.from_numpy(x)
    graph_of_node = torch.repeat_interleave(torch.arange(len(graphs)), torch.from_numpy(np.diff(graphs.node_ptr)))
    dropped_x = drop_profile(x, graph_of_node, len(graphs), 0.5)
    dropped = dropped_x[:, UNPROFILED] == 1
    windows = graph_of_node[dropped].unique()
    assert 0 < len(windows) < len(graphs)
    assert torch.equal(dropped, torch.isin(graph_of_node, windows))  # all of a window's nodes, or none
    assert (dropped_x[dropped, UNPROFILED + 1:] == 0).all()
    assert torch.equal(dropped_x[:, :UNPROFILED], x[:, :UNPROFILED]) and torch.equal(dropped_x[~dropped], x[~dropped])
