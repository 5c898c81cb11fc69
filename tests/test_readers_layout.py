"""Layouts: any delimited text capture described in TOML, read like a built-in format; the
worked examples of docs/formats.md, strict validation with one-line errors, and the reading rules
(headers, indexes from the end, ragged rows, quoting, labels, units, positions, streaming)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from kdcore.data.formats import format_by_name, read_capture
from kdcore.data.formats.chunks import capture_chunks, frame_index, streams
from kdcore.data.formats.labels import sidecar_path
from kdcore.data.formats.layout import CanId, Label, Layout, LayoutError, LayoutFormat, Payload, Timestamp, load_layout
from kdcore.data.frames import BadRowError, FrameTable
from kdcore.errors import KdcoreError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "formats.md"
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real is not present: real-capture tests need the shared data folder")


def docs_block(first_line: str) -> str:
    """The fenced block of docs/formats.md whose first line is ``first_line``."""
    for block in re.findall(r"```\w*\n(.*?)```", DOCS.read_text(), re.DOTALL):
        if block.splitlines()[0] == first_line:
            return block
    raise AssertionError(f"docs/formats.md has no block starting {first_line!r}")


def layout_file(folder: Path, text: str, name: str = "layout.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def read_with(path: Path, layout: Layout, **read) -> FrameTable:
    return read_capture(path, format=LayoutFormat(layout), **read)


# ============================================================================ the docs' examples


@needs_real
def test_docs_example_j1939_reads_the_labelled_csv_as_the_built_in_format(tmp_path):
    layout = load_layout(layout_file(tmp_path, docs_block("# j1939.toml")))
    path = REAL / "j1939-systemscyber" / "labeled_TSC1.csv"
    assert layout == format_by_name("j1939_csv").layout
    by_layout, built_in = read_with(path, layout), read_capture(path)
    for column in ("timestamp", "can_id", "dlc", "payload", "label", "attack_type", "extended"):
        assert np.array_equal(getattr(by_layout, column), getattr(built_in, column)), column
    assert by_layout.attack_names == built_in.attack_names == ("normal", "high_torque_command")


@needs_real
def test_docs_example_road_reads_a_road_capture(tmp_path):
    layout = load_layout(layout_file(tmp_path, docs_block("# road.toml")))
    path = REAL / "road-statgraph" / "Deal_reverse_light_on_attack_1_masquerade.csv"
    by_layout, built_in = read_with(path, layout), read_capture(path)
    for column in ("timestamp", "can_id", "dlc", "payload", "label"):
        assert np.array_equal(getattr(by_layout, column), getattr(built_in, column)), column
    assert not by_layout.timestamps and by_layout.attack_rows == 1971
    assert by_layout.attack_names == ("normal", "deal_reverse_light_on_attack_1_masquerade")


def test_docs_example_tab_separated_log(tmp_path):
    data = docs_block("# logger 2.3, bus 500 kbit/s")
    path = tmp_path / "trip.tsv"
    path.write_text(data)
    assert "\t" in data  # the docs keep the tabs
    table = read_with(path, load_layout(layout_file(tmp_path, docs_block("# logger.toml"))))
    assert table.timestamp.tolist() == [0.01025, 0.01048]
    assert table.can_id.tolist() == [0x0C5, 0x1A0] and table.dlc.tolist() == [8, 2]
    assert table.payload[1, :2].tolist() == [0x03, 0xE8] and not table.payload[1, 2:].any()
    assert table.label.tolist() == [0, 1] and table.attack_names == ("normal", "SPOOF")


# ============================================================================ validation


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[can_id]\ncolumn = 1\n[payload]\ncolums = [2]\n', "payload.colums: unknown key; did you mean 'payload.columns'?"),
        ('delimeter = ";"\n[can_id]\ncolumn = 1\n[payload]\ncolumn = 2\n', "delimeter: unknown key; did you mean 'delimiter'?"),
        ('[can_id]\ncolumn = 1\n', "payload: missing: every layout needs [payload]"),
        ('[can_id]\ncolumn = 1\n[payload]\ncolumn = 2\nrest = 3\n', "payload: expected exactly one of column, columns, rest; got column, rest"),
        ('[can_id]\ncolumn = "id"\n[payload]\ncolumn = 2\n', "can_id.column: the column 'id' is named, but the layout has no header (header = true)"),
        ('delimiter = ";;"\n[can_id]\ncolumn = 1\n[payload]\ncolumn = 2\n', "delimiter: expected one character"),
        ('[can_id]\ncolumn = 1\nbase = 8\n[payload]\ncolumn = 2\n', "can_id.base: expected one of 16, 10, got 8"),
        ('[can_id]\ncolumn = 1\n[payload]\ncolumn = 2\n[timestamp]\ncolumn = 0\nunit = "min"\n', "timestamp.unit: expected one of 's', 'ms', 'us', 'ns', got 'min'"),
        ('[can_id]\ncolumn = 1\n[payload]\ncolumns = [2, 3, true]\n', "payload.columns: expected a list of at most 8 header names or column indexes"),
        ('[can_id]\ncolumn = 1\n[payload]\ncolumn = 2\n[label]\ncolumn = 3\nnormal = "0"\n', "label.normal: expected a list of non-empty texts"),
        ('[can_id]\ncolumn = 1\n[payload]\ncolumn = 2\n[label]\ncolumn = 3\nnormal = ["0"]\nattack = ["0"]\n', "label.attack: 0 cannot mean both normal and attack"),
        ('[can_id]\n[payload]\ncolumn = 2\n', "can_id: expected a column"),
        ('skip_lines = -1\n[can_id]\ncolumn = 1\n[payload]\ncolumn = 2\n', "skip_lines: expected a number of lines"),
        ('[can_id]\ncolumn = 1\nextended = "yes"\n[payload]\ncolumn = 2\n', "can_id.extended: expected true or false"),
        ("[can_id\n", "not a TOML file"),
    ],
)
def test_a_layout_file_with_a_mistake_is_refused_in_one_line_naming_the_key(tmp_path, toml, message):
    path = layout_file(tmp_path, toml)
    with pytest.raises(LayoutError) as caught:
        load_layout(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


def test_a_missing_layout_file(tmp_path):
    with pytest.raises(LayoutError, match=r"missing\.toml: layout file not found"):
        load_layout(tmp_path / "missing.toml")


def test_a_layout_is_plain_data_and_equal_layouts_read_alike():
    layout = Layout(can_id=CanId(1), payload=Payload(columns=[2, 3]), label=Label(4, normal=["0"]))
    data = layout.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["payload"]["columns"] == [2, 3] and data["label"]["normal"] == ["0"]
    assert Layout.from_dict(json.loads(json.dumps(data))) == layout
    same = Layout(can_id=CanId(1), payload=Payload(columns=(2, 3)), label=Label(4, normal=("0",)))
    assert LayoutFormat(same) == LayoutFormat(layout) and hash(LayoutFormat(same)) == hash(LayoutFormat(layout))
    assert LayoutFormat(same) != LayoutFormat(Layout(can_id=CanId(1), payload=Payload(columns=[2])))


# ============================================================================ reading


def test_header_names_in_any_case_and_order_and_a_missing_one(tmp_path):
    layout = Layout(header=True, timestamp=Timestamp("Time"), can_id=CanId("ID"), payload=Payload(column="Data"))
    path = tmp_path / "a.csv"
    path.write_text("\n data , time,id\n0102,1.5,7ff\n")
    table = read_with(path, layout)
    assert (table.timestamp.tolist(), table.can_id.tolist(), table.dlc.tolist()) == ([1.5], [0x7FF], [2])
    path.write_text("time,ident,data\n1.5,7ff,00\n")
    message = str(pytest.raises(BadRowError, read_with, path, layout).value)
    assert message.startswith(f"{path}:1: header: no column 'ID' (expected Time, ID, Data; the header names 'time, ident, data')")


def test_ragged_rows_with_the_label_counted_from_the_end(tmp_path):
    layout = Layout(timestamp=Timestamp(0), can_id=CanId(1), payload=Payload(rest=2),
                    label=Label(-1, normal=("n",), attack=("a",), attack_names="file"))
    path = tmp_path / "replay-3.csv"
    path.write_text("1.0,100,01,02,n\n2.0,101,a\n3.0,102,0A,0B,0C,a\n4.0\n")
    with pytest.raises(BadRowError, match=r"replay-3\.csv:4: row: expected at least 3 fields: '4\.0'"):
        read_with(path, layout)
    table = read_with(path, layout, on_bad_rows="skip")
    assert table.dlc.tolist() == [2, 0, 3] and table.payload[2, :3].tolist() == [10, 11, 12]
    assert table.label.tolist() == [0, 1, 1] and table.attack_names == ("normal", "replay")


def test_whitespace_rows_units_comments_skipped_lines_and_positions(tmp_path):
    layout = Layout(delimiter="whitespace", skip_lines=2, comment="%", timestamp=Timestamp(0, unit="us"), can_id=CanId(1, base=10),
                    payload=Payload(column=2))
    path = tmp_path / "log.txt"
    path.write_text("logger v1\nstarted\n% a comment\n  1500   256\tAABB\n\n2500 257 CC\n")
    table = read_with(path, layout)
    assert table.timestamp.tolist() == [0.0015, 0.0025] and table.can_id.tolist() == [256, 257]
    no_clock = read_with(path, Layout(delimiter="whitespace", skip_lines=2, comment="%", can_id=CanId(1, base=10), payload=Payload(column=2)))
    assert not no_clock.timestamps and no_clock.timestamp.tolist() == [0.0, 1.0]


def test_quoted_values_hold_the_delimiter_but_no_line_end(tmp_path):
    layout = Layout(header=True, can_id=CanId("id"), payload=Payload(column="data"), label=Label("label", attack_names="value"))
    path = tmp_path / "q.csv"
    path.write_text('id,note,data,label\n100,"a, b",00,normal\n101,"open,01,normal\n102,"x ""y""",02,"drop table"\n')
    message = str(pytest.raises(BadRowError, read_with, path, layout).value)
    assert message == f"""{path}:3: row: a quoted value that does not end on its line: '101,"open,01,normal'"""
    table = read_with(path, layout, on_bad_rows="skip")
    assert table.can_id.tolist() == [0x100, 0x102] and table.attack_names == ("normal", "drop table")


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ("5,1.0,100,0102", "row", "expected 3 fields, got 4: '5,1.0,100,0102'"),
        ("x,100,01", "t", "not a finite number: 'x'"),
        ("1.0,12345678901,01", "id", "not a decimal CAN ID: '12345678901'"),
        ("1.0,536870912,01", "id", "more than 29 bits: '536870912'"),
        ("1.0,100,0G", "bytes", "not a hex payload of 0-8 bytes: '0G'"),
    ],
)
def test_bad_rows_name_the_header_column(tmp_path, row, field, reason):
    layout = Layout(header=True, timestamp=Timestamp("t"), can_id=CanId("id", base=10), payload=Payload(column="bytes"))
    path = tmp_path / "b.csv"
    path.write_text(f"t,id,bytes\n1.0,100,01\n{row}\n2.0,101,02\n")
    assert str(pytest.raises(BadRowError, read_with, path, layout).value) == f"{path}:3: {field}: {reason}"
    assert read_with(path, layout, on_bad_rows="skip").can_id.tolist() == [100, 101]


def test_label_values_and_attack_names(tmp_path):
    path = tmp_path / "test_04_fuzzing" / "capture.csv"
    path.parent.mkdir()
    path.write_text("0,100,00,normal\n1,101,00,1\n2,102,00,x\n3,103,00,spoof\n")
    auto = read_with(path, Layout(timestamp=Timestamp(0), can_id=CanId(1), payload=Payload(column=2), label=Label(3)))
    assert auto.label.tolist() == [0, 1, 1, 1] and auto.attack_names == ("normal", "fuzzing", "spoof")
    assert auto.attack_type.tolist() == [0, 1, 1, 2]  # "1" and "x" (a number, one character) are named after the folder
    strict = Layout(timestamp=Timestamp(0), can_id=CanId(1), payload=Payload(column=2), label=Label(3, normal=("normal",), attack=("spoof",)))
    assert str(pytest.raises(BadRowError, read_with, path, strict).value) == f"{path}:2: label: expected normal or spoof: '1'"


def test_a_layout_capture_streams_and_takes_a_sidecar_when_it_has_no_labels(tmp_path):
    layout = Layout(delimiter=";", timestamp=Timestamp(0), can_id=CanId(1), payload=Payload(column=2))
    path = tmp_path / "drive.csv"
    path.write_text("".join(f"{k * 0.01:.2f};{0x100 + k % 3:X};{k % 256:02X}\n" for k in range(3000)))
    capture_format = LayoutFormat(layout)
    assert streams(path, capture_format)
    whole = read_capture(path, format=capture_format)
    chunks = list(capture_chunks(path, capture_format, chunk_bytes=500))
    assert len(chunks) > 20 and np.array_equal(FrameTable.concat(chunks).can_id, whole.can_id)
    assert sum(block.frames for block in frame_index(path, capture_format, chunk_bytes=500)) == 3000
    sidecar_path(path).write_text("start,end,attack,can_id\n1.0,1.5,spoof,101 102\n")
    labelled = read_capture(path, format=capture_format)
    expected = (whole.timestamp >= 1.0) & (whole.timestamp <= 1.5) & np.isin(whole.can_id, [0x101, 0x102])
    assert np.array_equal(labelled.label == 1, expected) and labelled.attack_names == ("normal", "spoof")
    with pytest.raises(KdcoreError, match="carries its own labels"):
        read_capture(path, format=LayoutFormat(Layout(delimiter=";", can_id=CanId(1), payload=Payload(column=2), label=Label(0))))


def test_a_sidecar_of_a_capture_without_timestamps_counts_positions(tmp_path):
    layout = Layout(can_id=CanId(0), payload=Payload(column=1))
    path = tmp_path / "plain.csv"
    path.write_text("".join(f"{0x100 + k % 4:X},{k:02X}\n" for k in range(40)))
    sidecar_path(path).write_text("start,end,attack,can_id\n10,19,spoof,0x101\n")
    table = read_with(path, layout)
    assert not table.timestamps
    assert np.flatnonzero(table.label).tolist() == [13, 17]  # positions 10-19, ID 0x101
