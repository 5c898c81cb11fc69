"""Window → graph construction against a plain reference, and the graph cache."""

import multiprocessing

import numpy as np
import pytest

from kdcore.data.cache import GraphCache, cache_key
from kdcore.data.frames import FrameTable
from kdcore.data.graphs import WindowGraphs
from kdcore.data.preprocess import Preprocessing
from kdcore.data.windows import FEATURES, build_window_graphs, node_keys


def random_table(n=1000, seed=0, ids=(0x10, 0x20, 0x30, 0x7FF, 0x18FEF100)):
    rng = np.random.default_rng(seed)
    return FrameTable.from_frames(
        timestamp=np.cumsum(rng.uniform(0.0001, 0.002, n)),
        can_id=rng.choice(ids, n),
        dlc=rng.integers(0, 9, n),
        payload=rng.integers(0, 256, (n, 8)),
        label=(rng.random(n) < 0.05),
    )


def reference_graph(table: FrameTable, start: int, window: int):
    """One window built the obvious way, frame by frame."""
    rows = range(start, start + window)
    ids = sorted({int(table.can_id[r]) for r in rows})
    node = {can_id: i for i, can_id in enumerate(ids)}
    edges = {}
    for a, b in zip(rows, list(rows)[1:]):
        key = (node[int(table.can_id[a])], node[int(table.can_id[b])])
        edges[key] = edges.get(key, 0) + 1
    features = []
    for can_id in ids:
        mine = [r for r in rows if table.can_id[r] == can_id]
        times = table.timestamp[mine]
        gaps = np.diff(times)
        payload = table.payload[mine].astype(float)
        features.append(
            [can_id, *payload.mean(axis=0), len(mine), np.mean([(r - start) / (window - 1) for r in mine]),
             gaps.mean() if len(gaps) else 0.0, gaps.std() if len(gaps) else 0.0,
             payload.std(axis=0).mean(), table.dlc[mine].mean()]
        )
    return ids, edges, np.array(features)


@pytest.mark.parametrize(("window", "stride"), [(100, 100), (50, 20), (7, 7)])
def test_matches_the_frame_by_frame_reference(window, stride):
    table = random_table()
    graphs = build_window_graphs(table, window, stride)
    starts = list(range(0, len(table) - window + 1, stride))
    assert len(graphs) == len(starts)
    for w, start in enumerate(starts[:12]):
        ids, edges, features = reference_graph(table, start, window)
        n0, n1 = graphs.node_ptr[w], graphs.node_ptr[w + 1]
        e0, e1 = graphs.edge_ptr[w], graphs.edge_ptr[w + 1]
        assert graphs.can_id[n0:n1].tolist() == ids
        built = {(int(s), int(d)): round(float(c) * window) for s, d, c in zip(*graphs.edge_index[:, e0:e1], graphs.edge_attr[e0:e1])}
        assert built == edges
        np.testing.assert_allclose(graphs.x[n0:n1], features, rtol=1e-5, atol=1e-6)
        assert graphs.y[w] == int(table.label[start : start + window].any())
        attacked = {int(table.can_id[r]) for r in range(start, start + window) if table.label[r]}
        assert graphs.node_attack[n0:n1].tolist() == [can_id in attacked for can_id in ids]
        assert tuple(graphs.time_span[w]) == (table.timestamp[start], table.timestamp[start + window - 1])
        attack_rows = [r for r in range(start, start + window) if table.label[r]]
        expected = table.timestamp[attack_rows[0]] if attack_rows else np.nan
        np.testing.assert_equal(graphs.attack_start[w], expected)  # the window's first attack frame, NaN without one


def test_feature_names_match_the_columns():
    assert random_table(200).payload.shape[1] == 8
    assert build_window_graphs(random_table(200), 100).num_features == len(FEATURES) == 15


def test_label_threshold_and_attack_type():
    n = 300
    label = np.zeros(n, np.uint8)
    label[10:15] = 1  # 5% of window 0
    label[150:200] = 1  # 50% of window 1
    attack_type = label * 2  # all "fuzzy"
    table = FrameTable.from_frames(np.arange(n, dtype=float), np.full(n, 5), np.full(n, 8), np.zeros((n, 8)), label, attack_type,
                                   ("normal", "dos", "fuzzy"))
    assert build_window_graphs(table, 100, 100).y.tolist() == [1, 1, 0]
    strict = build_window_graphs(table, 100, 100, label_threshold=0.1)
    assert strict.y.tolist() == [0, 1, 0]
    assert strict.attack_type.tolist() == [0, 2, 0]


def test_too_few_frames_make_no_window():
    graphs = build_window_graphs(random_table(50), 100)
    assert len(graphs) == 0 and graphs.num_frames == 50


def test_one_million_frames_in_bounded_time_and_memory_shape():
    table = random_table(200_000, ids=tuple(range(0x100, 0x160)))
    graphs = build_window_graphs(table, 100, 100)
    assert len(graphs) == 2000 and graphs.node_ptr[-1] == len(graphs.x)


def test_preprocessing_is_fitted_on_normal_windows_only():
    table = random_table(2000)
    graphs = build_window_graphs(table, 20, 20)
    preprocessing = Preprocessing.fit(graphs)
    normal_nodes = graphs.node_rows(np.flatnonzero(graphs.y == 0))
    np.testing.assert_allclose(preprocessing.mean, graphs.x[normal_nodes].mean(axis=0), rtol=1e-6)
    assert preprocessing.id_token(np.array([0x10, 0x12345])).tolist() == [1, 0]  # unseen → 0
    restored = Preprocessing.from_dict(preprocessing.to_dict())
    assert np.array_equal(restored.vocabulary, preprocessing.vocabulary)
    graph = preprocessing.apply(graphs)[0]
    assert graph.x.shape[1] == 15 and int(graph.id_token.min()) >= 0


def test_concat_keeps_windows_and_renumbers_attack_types():
    a = build_window_graphs(random_table(300, seed=1), 100)
    b = build_window_graphs(random_table(300, seed=2), 100)
    both = WindowGraphs.concat([a, b])
    assert len(both) == 6 and both.node_ptr[-1] == len(a.x) + len(b.x)
    assert both.num_frames == 600
    np.testing.assert_array_equal(both.x[both.node_ptr[3] : both.node_ptr[4]], b.x[: b.node_ptr[1]])


def test_cache_key_follows_content_and_parameters(tmp_path):
    path = tmp_path / "capture.csv"
    path.write_text("a")
    key = cache_key(path, window=100)
    assert cache_key(path, window=100) == key
    assert cache_key(path, window=50) != key
    path.write_text("b")
    assert cache_key(path, window=100) != key


def test_second_read_comes_from_the_cache(tmp_path):
    cache = GraphCache(tmp_path)
    calls = []

    def build():
        calls.append(1)
        return build_window_graphs(random_table(500), 100)

    first = cache.get_or_build("k", build)
    second = cache.get_or_build("k", build)
    assert len(calls) == 1 and cache.hits == 1
    np.testing.assert_array_equal(first.x, second.x)
    assert second.attack_names == first.attack_names


def _build_into(directory):
    GraphCache(directory).get_or_build("shared", lambda: build_window_graphs(random_table(20000), 100))


def test_concurrent_builders_never_corrupt_the_cache(tmp_path):
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        pool.map(_build_into, [tmp_path] * 4)
    assert [p.name for p in tmp_path.iterdir()] == ["shared.npz"]
    assert len(WindowGraphs.load(tmp_path / "shared.npz")) == 200


# --- captures without timestamps ------------------------------------------------------------------


def test_without_timestamps_timing_is_absent_and_scales_to_the_training_mean(tmp_path):
    timed = random_table(2000)
    untimed = FrameTable.from_frames(None, timed.can_id, timed.dlc, timed.payload, timed.label)
    assert not untimed.timestamps and untimed.timestamp.tolist()[:3] == [0.0, 1.0, 2.0]  # positions, flagged
    graphs = build_window_graphs(untimed, 50, 50)
    timing = [FEATURES.index("interarrival_mean"), FEATURES.index("interarrival_std")]
    other = [i for i in range(len(FEATURES)) if i not in timing]
    assert np.isnan(graphs.x[:, timing]).all() and not np.isnan(graphs.x[:, other]).any()
    assert not graphs.timestamps and graphs.time_span[1].tolist() == [50.0, 99.0]  # windows span positions
    # every other feature is what the timed capture gives
    np.testing.assert_array_equal(graphs.x[:, other], build_window_graphs(timed, 50, 50).x[:, other])

    # trained with timestamps, an absent value lands on the training mean: 0 once scaled
    with_time = Preprocessing.fit(build_window_graphs(timed, 50, 50))
    scaled = with_time.apply(graphs).x.numpy()
    assert (scaled[:, timing] == 0).all() and np.isfinite(scaled).all()
    # trained without: fitted on the values present, nothing breaks
    without = Preprocessing.fit(graphs)
    assert without.mean[timing].tolist() == [0.0, 0.0] and without.std[timing].tolist() == [1.0, 1.0]

    graphs.save(tmp_path / "g.npz")
    assert WindowGraphs.load(tmp_path / "g.npz").timestamps is False


def test_a_mix_of_captures_fits_timing_on_the_timed_ones():
    def normal(seed):
        table = random_table(2000, seed=seed)
        return FrameTable.from_frames(table.timestamp, table.can_id, table.dlc, table.payload)

    timed = build_window_graphs(normal(1), 50, 50)
    untimed = build_window_graphs(normal(2).with_positions(), 50, 50)
    both = WindowGraphs.concat([timed, untimed])
    assert not both.timestamps
    column = FEATURES.index("interarrival_mean")
    assert Preprocessing.fit(both).mean[column] == pytest.approx(timed.x[:, column].astype(np.float64).mean())


# --- J1939 graph nodes ------------------------------------------------------------------------------


def j1939_frames():
    # TSC1 (PGN 0, PDU1: destination 0x00) from SA 0x0B and 0x03; EEC1 (PGN 0xF004, PDU2) from SA 0x00; an 11-bit 0x0B0
    can_id = np.array([0x0C00000B, 0x0C000003, 0x0CF00400, 0x0C00FF0B, 0x0B0], np.uint32)
    return FrameTable.from_frames(np.arange(5.0), can_id, np.full(5, 8), np.zeros((5, 8)),
                                  extended=np.array([True, True, True, True, False]))


def test_a_node_can_be_the_j1939_sender_or_the_message():
    table = j1939_frames()
    assert node_keys(table).can_id.tolist() == table.can_id.tolist()
    assert node_keys(table, "j1939_source").can_id.tolist() == [0x0B, 0x03, 0x00, 0x0B, 0x800000B0]
    # PGN: PDU1 groups (PF < 240) drop the destination byte, PDU2 keep PS as the group extension
    assert node_keys(table, "j1939_pgn").can_id.tolist() == [0x00000, 0x00000, 0xF004, 0x00000, 0x800000B0]
    with pytest.raises(ValueError, match="graph_node must be one of"):
        node_keys(table, "sender")


def test_29_bit_ids_stay_whole_in_graphs():
    table = random_table(400, ids=(0x18FEF100, 0x18FEF101, 0x0CF00400))
    graphs = build_window_graphs(table, 10, 10)
    assert set(graphs.can_id.tolist()) == {0x18FEF100, 0x18FEF101, 0x0CF00400}
    tokens = Preprocessing.fit(graphs).id_token(np.array([0x18FEF100, 0x18FEF101], np.uint32))
    assert tokens[0] != tokens[1]  # 2**24 apart from float32: one bit apart in the vocabulary
