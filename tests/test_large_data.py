"""Large captures: chunked reading, chunked graph construction and memory-mapped graphs give
exactly what the whole-capture path gives, with the same line numbers in errors."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import kdcore.data.formats.chunks as chunks
from kdcore.cli import app
from kdcore.data.cache import GraphCache, _write_folder
from kdcore.data.captures import CaptureDataset, GraphRecipe, should_stream, stream_threshold_bytes, time_slice
from kdcore.data.formats import read_capture
from kdcore.data.formats.chunks import capture_chunks, frame_index, streams
from kdcore.data.formats.writers import write_candump, write_csv
from kdcore.data.frames import BadRowError, FrameTable
from kdcore.data.graphs import _ARRAYS, GraphWriter, WindowGraphs
from kdcore.data.preprocess import Preprocessing
from kdcore.data.windows import FEATURES, build_window_graphs, build_window_graphs_chunked
from kdcore.errors import KdcoreError

from conftest import tiny_capture, tiny_config
from test_windows import random_table

HEADER = b"timestamp,arbitration_id,data_field,attack\n"


def assert_same_graphs(got: WindowGraphs, expected: WindowGraphs) -> None:
    for name in _ARRAYS:
        a, b = np.asarray(getattr(got, name)), np.asarray(getattr(expected, name))
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert got.attack_names == expected.attack_names
    assert got.num_frames == expected.num_frames


def assert_same_frames(got: FrameTable, expected: FrameTable) -> None:
    for name in ("timestamp", "can_id", "dlc", "payload", "label", "attack_type"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
    assert got.attack_names == expected.attack_names
    assert got.bad_rows == expected.bad_rows


def slices(table: FrameTable, size: int):
    return [table.take(slice(i, i + size)) for i in range(0, len(table), size)]


def written(tmp_path, parts) -> WindowGraphs:
    writer = GraphWriter(tmp_path / "graphs", len(FEATURES))
    for part in parts:
        writer.append(part)
    writer.close()
    return WindowGraphs.load_folder(tmp_path / "graphs")


# --- chunked graph construction ------------------------------------------------------------------


@pytest.mark.parametrize(("window", "stride"), [(100, 100), (50, 20), (7, 7), (10, 13), (2, 1)])
@pytest.mark.parametrize("chunk", [1, 6, 99, 250, 2999, 3000, 5000])
def test_chunked_build_equals_the_whole_build(tmp_path, window, stride, chunk):
    table = random_table(3000)
    whole = build_window_graphs(table, window, stride)
    parts = list(build_window_graphs_chunked(slices(table, chunk), window, stride))
    assert len(whole) > 0
    assert_same_graphs(written(tmp_path, parts), whole)
    assert_same_graphs(WindowGraphs.concat(parts), whole)


def test_chunked_build_of_too_few_frames_is_empty(tmp_path):
    table = random_table(60)
    graphs = written(tmp_path, build_window_graphs_chunked(slices(table, 7), 100, 10))
    assert_same_graphs(graphs, build_window_graphs(table, 100, 10))
    assert len(graphs) == 0 and graphs.num_frames == 60 and graphs.mapped


def test_mapped_graphs_pickle_by_folder(tmp_path):
    graphs = written(tmp_path, [build_window_graphs(random_table(2000), 20, 20)])
    assert graphs.mapped
    data = pickle.dumps(graphs)
    assert len(data) < 1000  # the folder, not the arrays
    assert_same_graphs(pickle.loads(data), graphs)


def test_a_second_writer_keeps_the_first_entry_and_a_failed_one_leaves_nothing(tmp_path):
    first = build_window_graphs(random_table(500, seed=1), 50)
    second = build_window_graphs(random_table(500, seed=2), 50)
    folder = tmp_path / "entry"
    _write_folder(folder, len(FEATURES), lambda writer: writer.append(first))
    _write_folder(folder, len(FEATURES), lambda writer: writer.append(second))  # lost the race: dropped
    assert_same_graphs(WindowGraphs.load_folder(folder), first)

    def broken(writer):
        writer.append(first)
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        _write_folder(tmp_path / "other", len(FEATURES), broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]


# --- chunked reading ------------------------------------------------------------------------------


def tricky_ctt(tmp_path, name="dos-1.csv"):
    """A ctt file with a BOM, CRLF and lone-CR line ends, blank lines, spaces and no final newline."""
    rows = [f"{i * 0.001:.6f},{0x100 + i % 7:03X},{'00112233'[: 2 * (i % 4)]},{int(i % 5 == 0)}" for i in range(400)]
    rows[17] = " 0.017000 , 0x105 ,00, 0"
    ends = ["\r\n" if i % 3 == 0 else "\r" if i % 11 == 0 else "\n" for i in range(len(rows))]
    text = "".join(row + end + ("\n" if i % 50 == 0 else "") for i, (row, end) in enumerate(zip(rows, ends)))
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + HEADER + text.rstrip("\r\n").encode())
    return path


def tricky_candump(tmp_path):
    rng = np.random.default_rng(5)
    table = tiny_capture(rng, 700)
    path = tmp_path / "drive.log"
    write_candump(table, path)
    text = path.read_bytes().replace(b"\n", b"\r\n", 40)
    lines = text.split(b"\n")
    lines.insert(100, b"")
    lines.insert(300, b"(1.5) can0 20000080#0000000000000000")  # an error frame: left out
    path.write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines).rstrip(b"\n"))
    return path


def tricky_car_hacking(tmp_path):
    rows = [f"{1478198376 + i * 0.0005:.6f},{0x316 + i % 5:04x},{i % 9},{','.join(['0a'] * (i % 9))}{',' if i % 9 else ''}{'T' if i % 13 == 0 else 'R'}"
            for i in range(500)]
    path = tmp_path / "DoS_dataset.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def car_hacking_text(tmp_path):
    rows = [f"Timestamp: {1479121434 + i * 0.0005:.6f}        ID: {0x350 + i % 6:04x}    000    DLC: {i % 9}    "
            + " ".join(["a2"] * (i % 9)) for i in range(450)]
    path = tmp_path / "normal_run_data.txt"
    path.write_text("\r\n".join(rows))
    return path


@pytest.mark.parametrize("make", [tricky_ctt, tricky_candump, tricky_car_hacking, car_hacking_text])
@pytest.mark.parametrize("chunk_bytes", [1, 97, 1000, 1 << 20])
def test_chunked_reading_equals_the_whole_read(tmp_path, make, chunk_bytes):
    path = make(tmp_path)
    whole = read_capture(path)
    assert streams(path) and len(whole) > 300
    parts = list(capture_chunks(path, chunk_bytes=chunk_bytes))
    assert_same_frames(FrameTable.concat(parts), whole)
    index = frame_index(path, chunk_bytes=chunk_bytes)
    assert sum(block.frames for block in index) == len(whole)
    for start in (0, 1, 150, len(whole) - 1, len(whole)):
        resumed = FrameTable.concat(list(capture_chunks(path, start_frame=start, index=index, chunk_bytes=chunk_bytes)))
        np.testing.assert_array_equal(resumed.timestamp, whole.timestamp[start:])
        np.testing.assert_array_equal(resumed.label, whole.label[start:])


def test_bad_rows_keep_their_line_numbers_across_blocks(tmp_path):
    path = tricky_ctt(tmp_path)
    lines = path.read_bytes().split(b"\n")
    lines[300] = b"0.5,XYZ,00,0"
    lines[350] = b"0.6,1F3,00"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(BadRowError) as whole:
        read_capture(path)
    with pytest.raises(BadRowError) as chunked:
        list(capture_chunks(path, chunk_bytes=64))
    assert str(chunked.value) == str(whole.value) and ":" in str(whole.value)
    skipped = read_capture(path, on_bad_rows="skip")
    parts = list(capture_chunks(path, on_bad_rows="skip", chunk_bytes=64))
    assert skipped.bad_rows == 2 and sum(part.bad_rows for part in parts) == 2
    assert_same_frames(FrameTable.concat(parts), skipped)


def test_a_bad_header_an_empty_file_and_a_missing_one_fail_as_in_a_whole_read(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"time,id,data,attack\n1.0,1F3,00,0\n")
    empty, missing = tmp_path / "empty.csv", tmp_path / "missing.csv"
    empty.touch()
    for path, format in ((bad, "ctt"), (empty, "ctt"), (empty, None), (missing, "ctt"), (missing, None)):
        with pytest.raises(KdcoreError) as whole:
            read_capture(path, format)
        with pytest.raises(KdcoreError) as chunked:
            list(capture_chunks(path, format, chunk_bytes=8))
        assert str(chunked.value) == str(whole.value)


def test_formats_that_do_not_stream_are_read_whole_and_sliced(tmp_path, monkeypatch):
    monkeypatch.setattr(chunks, "CHUNK_FRAMES", 100)
    path = tmp_path / "drive.log"
    write_candump(tiny_capture(np.random.default_rng(2), 450), path)
    path.with_name("drive.log.attacks.csv").write_text("start,end,attack\n0.01,0.05,dos\n")
    assert not streams(path)  # a sidecar labels by time over the whole capture
    parts = list(capture_chunks(path))
    assert [len(part) for part in parts] == [100, 100, 100, 100, 50]
    whole = read_capture(path)
    assert_same_frames(FrameTable.concat(parts), whole)
    assert whole.attack_rows > 0


# --- datasets and the command line ----------------------------------------------------------------


def load_splits(tmp_path, root, cache, monkeypatch, stream_mib):
    monkeypatch.setenv("KDCORE_STREAM_MIB", stream_mib)
    config = tiny_config(tmp_path / "exp", dataset="captures", data_root=str(root), window_size=50, window_stride=20,
                         cache_dir=str(tmp_path / cache), val_fraction=0.17)
    return CaptureDataset(config).load_splits()


def test_a_streamed_dataset_serves_the_same_graphs_as_the_in_memory_one(tmp_path, ctt_root, monkeypatch):
    monkeypatch.setattr(chunks, "CHUNK_BYTES", 3000)  # ~75 rows a block
    in_memory = load_splits(tmp_path, ctt_root, "memory", monkeypatch, "1000")
    streamed = load_splits(tmp_path, ctt_root, "streamed", monkeypatch, "0")
    assert type(in_memory.train).__name__ == "GraphSet" and type(streamed.train).__name__ == "MappedGraphSet"
    assert streamed.state == in_memory.state  # vocabulary and scaling bit for bit
    assert list(streamed.tests) == list(in_memory.tests)
    pairs = [(in_memory.train, streamed.train), (in_memory.val, streamed.val)]
    pairs += [(in_memory.tests[name], streamed.tests[name]) for name in in_memory.tests]
    for expected, got in pairs:
        assert len(got) == len(expected) > 0
        assert torch.equal(got.labels, expected.labels) and torch.equal(got.attack_type, expected.attack_type)
        assert torch.equal(got.time_span, expected.time_span) and got.attack_names == expected.attack_names
        np.testing.assert_array_equal(got.attack_start, expected.attack_start)  # NaN where no attack frame, in both
        for i in range(len(expected)):
            a, b = expected[i], got[i]
            for key in ("x", "id_token", "edge_index", "edge_attr", "y", "attack_type"):
                assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), (i, key)
            assert a.num_nodes == b.num_nodes
    entries = sorted((tmp_path / "streamed").iterdir())
    assert len(entries) == 6 and all(entry.is_dir() for entry in entries)
    assert all(np.load(entry / "x.npy", mmap_mode="r").shape[1] == len(FEATURES) for entry in entries)

    again = load_splits(tmp_path, ctt_root, "streamed", monkeypatch, "0")  # from the cache, mapped
    assert torch.equal(again.train[3].x, streamed.train[3].x)
    assert [entry.stat().st_mtime_ns for entry in entries] == [e.stat().st_mtime_ns for e in sorted((tmp_path / "streamed").iterdir())]


def test_streamed_split_boundaries_are_the_frame_fractions(tmp_path, monkeypatch):
    monkeypatch.setattr(chunks, "CHUNK_BYTES", 500)
    path = tmp_path / "capture.csv"
    write_csv(tiny_capture(np.random.default_rng(1), 3001, "dos"), path)
    table = read_capture(path)
    recipe = GraphRecipe(30, 7, stream=True)
    for start, stop in ((0.0, 0.7), (0.7, 0.85), (0.85, 1.0), (0.0, 1.0)):
        expected = build_window_graphs(time_slice(table, start, stop), 30, 7)
        assert_same_graphs(recipe.graphs(GraphCache(tmp_path / "cache"), path, start, stop), expected)
        assert_same_graphs(recipe.graphs(GraphCache(None), path, start, stop), expected)


def test_fit_on_parts_equals_fit_on_their_concatenation(tmp_path, monkeypatch):
    monkeypatch.setattr("kdcore.data.preprocess.WINDOWS_PER_STEP", 7)
    parts = [build_window_graphs(random_table(3000, seed=s), 20, 20) for s in range(3)]
    whole = Preprocessing.fit(WindowGraphs.concat(parts))
    chunked = Preprocessing.fit_parts([parts[0], written(tmp_path, parts[1:2]), parts[2]])
    assert chunked.to_dict() == whole.to_dict()


def test_the_stream_threshold(tmp_path, monkeypatch):
    small = tmp_path / "small.csv"
    small.write_bytes(HEADER + b"0.1,1F3,00,0\n" * 100)
    monkeypatch.delenv("KDCORE_STREAM_MIB", raising=False)
    assert stream_threshold_bytes() == 64 << 20 and not should_stream([small])
    monkeypatch.setenv("KDCORE_STREAM_MIB", "0.001")
    assert should_stream([small]) and not should_stream([small], stream=False)
    monkeypatch.setenv("KDCORE_STREAM_MIB", "lots")
    with pytest.raises(KdcoreError, match="KDCORE_STREAM_MIB"):
        should_stream([small])


def test_data_build_streams_into_mapped_cache_folders(tmp_path, ctt_root):
    runner = CliRunner()

    def build(*flags, cache="cache"):
        result = runner.invoke(app, ["data", "build", str(ctt_root), "--window", "50", "--stride", "50",
                                     "--cache-dir", str(tmp_path / cache), "--json", *flags])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    streamed = build("--stream")
    whole = build("--no-stream", cache="whole")
    assert streamed["streamed"] and not whole["streamed"]
    for key in ("files", "frames", "graphs", "attack_graphs"):
        assert streamed[key] == whole[key]
    assert (streamed["graphs"], streamed["frames"]) == (120, 6000)
    assert all(entry.is_dir() for entry in (tmp_path / "cache").iterdir())
    assert build("--stream")["cache_hits"] == 6  # train and validation parts of 2 files, 2 test files
    assert build()["streamed"] is False  # 6000 frames: under the threshold


def test_training_on_a_streamed_dataset_gives_the_same_results(engine, tmp_path, ctt_root, monkeypatch):
    results = []
    for stream_mib in ("1000", "0"):
        monkeypatch.setenv("KDCORE_STREAM_MIB", stream_mib)
        config = tiny_config(tmp_path / f"exp-{stream_mib}", dataset="hcrl_sa", data_root=str(ctt_root), mode="normal", max_epochs=2)
        results.append(engine.run(config).metrics)
    in_memory, streamed = results
    for key in ("f1", "accuracy", "auroc", "confusion_matrix", "windows", "test_sets"):
        assert streamed[key] == in_memory[key], key
    assert any((tmp_path / "exp-0" / "cache" / "graphs").iterdir())
    assert all(entry.is_dir() for entry in (tmp_path / "exp-0" / "cache" / "graphs").iterdir())
