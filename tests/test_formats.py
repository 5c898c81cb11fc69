"""Capture-format readers: detection by content, the real captures against python-can's counts,
round trips through writers, malformed rows (one-line ``path:line: field: reason`` errors and
``on_bad_rows="skip"`` counts), empty files, and attack sidecars."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import can
import numpy as np
import pytest

from kdcore.data.formats import detect_format, format_by_name, installed_formats, read_capture
from kdcore.data.formats.car_hacking import CarHackingCsv
from kdcore.data.formats.chunks import capture_chunks
from kdcore.data.formats.labels import sidecar_path
from kdcore.data.formats.layout import LayoutFormat
from kdcore.data.formats.pcan import ole_to_unix
from kdcore.data.formats.writers import format_fixed, write_candump, write_csv
from kdcore.data.frames import BadRowError, FrameTable
from kdcore.errors import KdcoreError

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
VEHICLES = REAL / "vehicles"
SAMPLES = REAL / "format-samples"
needs_real = pytest.mark.skipif(
    not REAL.is_dir(), reason="../shared/data/real is not present: real-capture tests need the shared data folder"
)


def write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    return path


def bad_row(path: Path, line: int, field: str, **read) -> str:
    """The error message of reading a malformed capture; checks it is one line naming path:line: field."""
    with pytest.raises(BadRowError) as caught:
        read_capture(path, **read)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}: {field}: "), message
    return message


def skipped(path: Path, **read) -> FrameTable:
    return read_capture(path, on_bad_rows="skip", **read)


def payload_bytes(table: FrameTable, i: int) -> bytes:
    return table.payload[i, : table.dlc[i]].tobytes()


def random_table(n: int, seed: int = 0, start: float = 1717548054.0) -> FrameTable:
    rng = np.random.default_rng(seed)
    dlc = rng.integers(0, 9, n).astype(np.uint8)
    payload = rng.integers(0, 256, (n, 8)).astype(np.uint8)
    payload[np.arange(8)[None, :] >= dlc[:, None]] = 0
    can_id = rng.integers(0, 0x800, n)
    can_id[::7] = rng.integers(0x800, 0x1FFFFFFF, len(can_id[::7]))
    timestamp = start + np.cumsum(rng.uniform(0.0001, 0.002, n))
    return FrameTable.from_frames(np.round(timestamp, 6), can_id, dlc, payload)


# ============================================================================ real captures


def _counts():
    path = VEHICLES / "COUNTS.tsv"
    if not path.is_file():
        return [pytest.param(None, None, None, None, id="no-shared-data")]
    params = []
    for line in path.read_text().splitlines():
        name, *rest = line.split("\t")
        if rest and not rest[0].startswith("ERROR"):
            params.append(pytest.param(name, int(rest[0]), int(rest[1]), float(rest[2].rstrip("s")), id=name))
    return params


@needs_real
@pytest.mark.parametrize(("name", "frames", "ids", "span"), _counts())
def test_real_capture_matches_python_can_counts(name, frames, ids, span):
    table = read_capture(VEHICLES / name)
    assert len(table) == frames
    assert len(np.unique(table.can_id)) == ids
    assert abs(float(np.ptp(table.timestamp)) - span) <= 0.1
    assert table.bad_rows == 0 and table.attack_rows == 0
    assert detect_format(VEHICLES / name).name == ("trc" if name.endswith(".trc") else "candump")


@needs_real
def test_counts_errors_are_the_two_files_that_are_not_candump():
    errors = {line.split("\t")[0] for line in (VEHICLES / "COUNTS.tsv").read_text().splitlines() if "\tERROR" in line}
    assert errors == {"civic8th/test.log", "civic8th/vsslogfiltered.log"}


@needs_real
@pytest.mark.parametrize("name", ["civic8th/lowclt.trc", "camaro/hotlog.log", "camaro/noeculog.log"])
def test_real_capture_frame_by_frame_as_python_can(name):
    table = read_capture(VEHICLES / name)
    messages = list(can.LogReader(VEHICLES / name))
    assert len(messages) == len(table)
    np.testing.assert_allclose(table.timestamp, [m.timestamp for m in messages], rtol=0, atol=1e-6)
    assert table.can_id.tolist() == [m.arbitration_id for m in messages]
    assert [payload_bytes(table, i) for i in range(len(table))] == [bytes(m.data) for m in messages]


@needs_real
def test_trc_timestamps_are_absolute_from_the_ole_start_time():
    table = read_capture(VEHICLES / "civic8th" / "lowclt.trc")
    # ;$STARTTIME=45790.7029485648 is 2025-05-13 16:52:14.756; the first row is 198.9 ms later
    assert table.timestamp[0] == pytest.approx(ole_to_unix(45790.7029485648) + 0.1989, abs=1e-6)
    assert table.timestamp[0] == pytest.approx(1747155134.756 + 0.1989, abs=1e-3)


@needs_real
def test_format_samples_labels_and_shared_frames():
    ctt = read_capture(SAMPLES / "can-train-and-test-layout.csv")
    native = read_capture(SAMPLES / "car-hacking-native.csv")
    assert detect_format(SAMPLES / "can-train-and-test-layout.csv").name == "ctt"
    assert detect_format(SAMPLES / "car-hacking-native.csv").name == "hcrl_ch"
    assert (len(ctt), ctt.attack_rows) == (18, 6)
    assert (len(native), native.attack_rows) == (18, 6)
    assert native.attack_names == ("normal", "attack")
    # the normal frames are the same 12 frames, the first 12 of camaro/hotlog.log ...
    hotlog = read_capture(VEHICLES / "camaro" / "hotlog.log").take(slice(0, 12))
    for table in (ctt, native):
        normal = table.take(table.label == 0)
        for column in ("timestamp", "can_id", "dlc", "payload"):
            assert np.array_equal(getattr(normal, column), getattr(hotlog, column)), column
    # ... but the injected frames differ: DoS (ID 0x000 every 0.3 ms) in the ctt sample,
    # fuzzing (random IDs and payloads every 0.5 ms) in the Car-Hacking one
    dos, fuzzy = ctt.take(ctt.label == 1), native.take(native.label == 1)
    assert set(dos.can_id.tolist()) == {0} and np.allclose(np.diff(dos.timestamp), 0.0003, atol=2e-6)
    assert len(set(fuzzy.can_id.tolist())) == 6 and np.allclose(np.diff(fuzzy.timestamp), 0.0005, atol=2e-6)


@needs_real
def test_a_list_of_ids_is_not_a_capture():
    with pytest.raises(KdcoreError, match=r"test\.log: not a capture in any known format \(tried: blf, .*candump\)"):
        read_capture(VEHICLES / "civic8th" / "test.log")


@needs_real
def test_busmaster_log_named_log_is_detected_as_busmaster():
    path = VEHICLES / "civic8th" / "vsslogfiltered.log"
    assert detect_format(path).name == "busmaster"
    table = read_capture(path)
    assert len(table) == 3187 and set(table.can_id.tolist()) == {0x158}
    # it is vsslog.log filtered to ID 0x158, logged by BUSMASTER on a clock 4 h behind UTC
    # (no start date in its header: seconds since midnight), to the millisecond
    candump = read_capture(VEHICLES / "civic8th" / "vsslog.log")
    candump = candump.take(candump.can_id == 0x158)
    assert np.array_equal(candump.payload, table.payload) and np.array_equal(candump.dlc, table.dlc)
    lag = candump.timestamp % 86400 - table.timestamp - 4 * 3600
    assert lag.min() >= 0 and lag.max() < 0.001


@needs_real
def test_detection_is_by_content_not_extension(tmp_path):
    shutil.copy(VEHICLES / "camaro" / "hotlog.log", tmp_path / "hotlog.trc")
    shutil.copy(VEHICLES / "civic8th" / "lowclt.trc", tmp_path / "lowclt.csv")
    assert detect_format(tmp_path / "hotlog.trc").name == "candump"
    assert detect_format(tmp_path / "lowclt.csv").name == "trc"


# ============================================================================ detection, empty files


def test_formats_are_registered_most_specific_first():
    formats = list(installed_formats())
    names = [f.name for f in formats]
    assert set(names) == {
        "blf", "busmaster", "trc", "asc", "ctt", "j1939_csv", "hcrl_ch", "hcrl_ch_txt", "road", "candump",
        "candump_console", "labelled_candump",
    }
    assert names[0] == "blf" and names[-1] == "candump"
    assert names.index("busmaster") < names.index("candump")
    assert [f.priority for f in formats] == sorted((f.priority for f in formats), reverse=True)


def test_unknown_content_is_refused_listing_the_formats(tmp_path):
    path = write(tmp_path, "ids.log", "0x1dc\n0x136\n\n0x13a\n")
    with pytest.raises(KdcoreError, match="not a capture in any known format") as caught:
        read_capture(path)
    for capture_format in installed_formats():
        assert capture_format.name in str(caught.value)


@pytest.mark.parametrize("content", [b"", b"\n\n  \r\n"])
def test_empty_file_detection_is_refused_and_every_format_reads_it_empty(tmp_path, content):
    path = write(tmp_path, "empty.log", content)
    with pytest.raises(KdcoreError, match="empty file"):
        read_capture(path)
    for capture_format in installed_formats():
        if isinstance(capture_format, LayoutFormat) and capture_format.layout.header:
            with pytest.raises(BadRowError, match=r"empty\.log:1: header: expected a header line"):
                read_capture(path, format=capture_format.name)  # ctt and j1939_csv need their header line
            continue
        if capture_format.name == "blf" and content:
            continue  # blank text is not an empty BLF file
        table = read_capture(path, format=capture_format.name)
        assert len(table) == 0 and table.bad_rows == 0, capture_format.name


def test_header_only_files_read_empty(tmp_path):
    assert len(read_capture(write(tmp_path, "a.csv", "timestamp,arbitration_id,data_field,attack\n"))) == 0
    trc = write(tmp_path, "a.trc", ";$FILEVERSION=1.1\n;$STARTTIME=45790.5\n;---+--\n")
    assert len(read_capture(trc)) == 0
    busmaster = write(tmp_path, "a.log", "***BUSMASTER Ver 3.2.0***\n***HEX***\n***SYSTEM MODE***\n")
    assert len(read_capture(busmaster)) == 0


def test_unknown_format_name(tmp_path):
    with pytest.raises(KdcoreError, match="capture format"):
        read_capture(write(tmp_path, "x.log", "(1.0) can0 123#00\n"), format="kcd")


# ============================================================================ candump

CANDUMP = """\
(1618787934.854636) can0 0C5#3000000030000000
(1618787934.854700) can0 18DAF110#021003

(1618787934.854800) can1 123#R
(1618787934.854900) can0 124#R4
(1618787934.855000) can0 7FF#
(1618787934.855100) can0 20000080#0000000000000000
(1618787934.855200) can0 125##1DEADBEEF
(1618787934.855300) can0 126#0102 T
"""


def test_candump_reads_standard_extended_remote_fd_and_skips_error_frames(tmp_path):
    path = write(tmp_path, "drive.log", CANDUMP.replace("\n", "\r\n", 2))
    assert detect_format(path).name == "candump"
    table = read_capture(path)
    assert table.can_id.tolist() == [0x0C5, 0x18DAF110, 0x123, 0x124, 0x7FF, 0x125, 0x126]
    assert table.dlc.tolist() == [8, 3, 0, 4, 0, 4, 2]
    assert payload_bytes(table, 0) == bytes.fromhex("3000000030000000")
    assert payload_bytes(table, 5) == bytes.fromhex("DEADBEEF")
    assert not table.payload[3].any()  # remote: zeros
    assert table.timestamp[1] == 1618787934.8547
    assert table.attack_rows == 0 and table.bad_rows == 0


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ("(1.5) can0 123#01ZZ", "data", "not a hex payload"),
        ("(1.5) can0 123#012", "data", "not a hex payload"),
        ("(1.5) can0 123#010203040506070809", "data", "not a hex payload of 0-8 bytes"),
        ("(1.5) can0 12G#01", "can_id", "not a hex CAN ID"),
        ("(1.5) can0 5FFFFFFF#01", "can_id", "more than 29 bits"),
        ("(1.5) can0", "row", "expected '(timestamp) interface ID#data'"),
        ("(1.5) can0 12301", "frame", "expected ID#data"),
        ("(nan) can0 123#01", "timestamp", "not a finite number"),
        ("(1.5x) can0 123#01", "timestamp", "not a finite number"),
        ("1.5 can0 123#01", "timestamp", "expected '(seconds)'"),
        ("(1.5) can0 123##1" + "00" * 12, "data", "CAN FD frame with more than 8 data bytes"),
        ("(1.5) can0 123#R9", "data", "remote frame"),
        ("(1.5) can0 123#01 X", "direction", "expected R or T"),
    ],
)
def test_candump_malformed_rows(tmp_path, row, field, reason):
    path = write(tmp_path, "bad.log", f"(1.0) can0 100#00\n(1.1) can0 101#01\n{row}\n(1.6) can0 102#02\n")
    message = bad_row(path, 3, field, format="candump")
    assert reason in message
    table = skipped(path, format="candump")
    assert len(table) == 3 and table.bad_rows == 1 and table.can_id.tolist() == [0x100, 0x101, 0x102]


def test_candump_first_bad_line_is_reported_and_skip_counts_all(tmp_path):
    path = write(tmp_path, "bad.log", "(1.0) can0 100#00\n(1.1) can0 1X1#01\n(nan) can0 102#02\n(1.3) can0 103#0\n(1.4) can0 104#04\n")
    bad_row(path, 2, "can_id")
    table = skipped(path)
    assert table.bad_rows == 3 and table.can_id.tolist() == [0x100, 0x104]


def test_write_candump_round_trip(tmp_path):
    table = random_table(2000)
    path = tmp_path / "out" / "replay.log"
    write_candump(table, path)
    assert not list(path.parent.glob(".*.tmp"))  # atomic: no temporary left behind
    lines = path.read_text().splitlines()
    assert re.fullmatch(r"\(\d+\.\d{6}\) can0 [0-9A-F]{3}(?:[0-9A-F]{5})?#(?:[0-9A-F]{2})*", lines[0])
    back = read_capture(path)
    for column in ("can_id", "dlc", "payload"):
        assert np.array_equal(getattr(back, column), getattr(table, column))
    np.testing.assert_allclose(back.timestamp, table.timestamp, rtol=0, atol=5e-7)
    # the vectorised %.6f formatting agrees with Python's (away from exact ties)
    values = (0.0, 1.5, 1717548054.420756, 2.0000004, 123.4567891, -0.25)
    assert format_fixed(np.array(values)).tolist() == [f"{v:.6f}".encode() for v in values]


def test_write_candump_empty_and_other_interface(tmp_path):
    write_candump(FrameTable.empty(), tmp_path / "empty.log")
    assert (tmp_path / "empty.log").read_bytes() == b""
    write_candump(random_table(3), tmp_path / "vcan.log", interface="vcan1")
    assert " vcan1 " in (tmp_path / "vcan.log").read_text()


# ============================================================================ ctt (can-train-and-test CSV)

CTT = """\
timestamp,arbitration_id,data_field,attack
1672531200.000100,1A0,0011223344556677,0
1672531200.000350,18DAF110,0210,1

1672531200.000600,7ff,,0
"""


def test_ctt_rows_labels_and_attack_name(tmp_path):
    folder = tmp_path / "test_03_spoof"
    folder.mkdir()
    path = write(folder, "x.csv", CTT)
    assert detect_format(path).name == "ctt"
    table = read_capture(path)
    assert table.timestamp.tolist() == [1672531200.0001, 1672531200.00035, 1672531200.0006]
    assert table.can_id.tolist() == [0x1A0, 0x18DAF110, 0x7FF]
    assert table.dlc.tolist() == [8, 2, 0]
    assert payload_bytes(table, 0) == bytes.fromhex("0011223344556677") and payload_bytes(table, 1) == b"\x02\x10"
    assert table.label.tolist() == [0, 1, 0] and table.attack_type.tolist() == [0, 1, 0]
    assert table.attack_names == ("normal", "spoof") and table.bad_rows == 0


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_ctt_bom_line_endings_spaces_and_id_prefixes(tmp_path, newline):
    text = (
        "\ufeffTimestamp,Arbitration_ID,Data_Field,Attack \n"
        " 1.5 ,\t0x1a0 , 00FF ,1\n"
        "\n   \n"
        "2e0,0X7FF,,0\n"
        "3,0x0,ab,0\n"
    ).replace("\n", newline)
    path = write(tmp_path, "dos-1.csv", text.encode())
    table = read_capture(path, format="ctt")
    assert table.timestamp.tolist() == [1.5, 2.0, 3.0]
    assert table.can_id.tolist() == [0x1A0, 0x7FF, 0]
    assert table.dlc.tolist() == [2, 0, 1] and table.label.tolist() == [1, 0, 0]
    assert table.attack_names == ("normal", "dos")


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ("1.0,1A0,00", "row", "expected 4 fields, got 3: '1.0,1A0,00'"),
        ("1.0,1A0,00,0,", "row", "expected 4 fields, got 5: '1.0,1A0,00,0,'"),
        ('1.0,"1A0,00,0', "row", "a quoted value that does not end on its line: '1.0,\"1A0,00,0'"),
        ("1.0 s,1A0,00,0", "timestamp", "not a finite number: '1.0 s'"),
        ("nan,1A0,00,0", "timestamp", "not a finite number: 'nan'"),
        (",1A0,00,0", "timestamp", "not a finite number: ''"),
        ("1.0, 1G0 ,00,0", "arbitration_id", "not a hex CAN ID: ' 1G0 '"),
        ("1.0,123456789,00,0", "arbitration_id", "not a hex CAN ID: '123456789'"),
        ("1.0,0x,00,0", "arbitration_id", "not a hex CAN ID: '0x'"),
        ("1.0,20000000,00,0", "arbitration_id", "more than 29 bits: '20000000'"),
        ("1.0,1A0,001,0", "data_field", "not a hex payload of 0-8 bytes: '001'"),
        ("1.0,1A0,001122334455667788,0", "data_field", "not a hex payload of 0-8 bytes: '001122334455667788'"),
        ("1.0,1A0,00zz,0", "data_field", "not a hex payload of 0-8 bytes: '00zz'"),
        ("1.0,1A0,00,2", "attack", "expected 0 or 1: '2'"),
        ("1.0,1A0,00,", "attack", "expected 0 or 1: ''"),
        ("x,y,z,w", "timestamp", "not a finite number: 'x'"),  # a row's first problem is the one reported
    ],
)
def test_ctt_malformed_rows(tmp_path, row, field, reason):
    lines = CTT.splitlines()
    path = write(tmp_path, "a.csv", "\n".join(lines[:2] + [row] + lines[2:]) + "\n")
    assert bad_row(path, 3, field) == f"{path}:3: {field}: {reason}"
    table = skipped(path)
    assert len(table) == 3 and table.bad_rows == 1 and table.can_id.tolist() == [0x1A0, 0x18DAF110, 0x7FF]


def test_ctt_header_and_first_bad_line_in_line_order(tmp_path):
    path = write(tmp_path, "h.csv", "")
    assert str(pytest.raises(BadRowError, read_capture, path, format="ctt").value) == (
        f"{path}:1: header: expected a header line naming the columns timestamp, arbitration_id, data_field, attack"
    )
    path = write(tmp_path, "h.csv", "\n\ntime,arbitration_id,data_field,attack\n1.0,1A0,00,0\n")
    assert str(pytest.raises(BadRowError, read_capture, path, format="ctt").value) == (
        f"{path}:3: header: no column 'timestamp' (expected timestamp, arbitration_id, data_field, attack; "
        "the header names 'time, arbitration_id, data_field, attack')"
    )
    # the header may come after blank lines, name the columns in another order, and name more
    path = write(tmp_path, "h.csv", "\nattack,data_field,extra,arbitration_id,timestamp\n1,00FF,x,1A0,2.5\n")
    table = read_capture(path, format="ctt")
    assert (table.can_id.tolist(), table.dlc.tolist(), table.label.tolist(), table.timestamp.tolist()) == ([0x1A0], [2], [1], [2.5])
    # a bad timestamp on line 3 is reported before a row with too few fields on line 4
    path = write(tmp_path, "a.csv", CTT.replace("1672531200.000350", "t") + "1.0,1A0\n7.0,1A0,00,3\n")
    assert bad_row(path, 3, "timestamp").endswith("not a finite number: 't'")
    whole = skipped(path)
    assert (len(whole), whole.bad_rows) == (2, 3)
    chunked = FrameTable.concat(list(capture_chunks(path, on_bad_rows="skip", chunk_bytes=40)))
    assert chunked.bad_rows == 3 and chunked.attack_names == whole.attack_names
    for column in ("timestamp", "can_id", "dlc", "payload", "label", "attack_type"):
        assert np.array_equal(getattr(chunked, column), getattr(whole, column)), column
    only_bad = write(tmp_path, "b.csv", CTT.splitlines()[0] + "\n1,2\n\n")
    table = skipped(only_bad)
    assert (len(table), table.bad_rows) == (0, 1)


def test_ctt_write_csv_round_trip_and_exact_text(tmp_path):
    table = random_table(3000)
    table = FrameTable.from_frames(table.timestamp, table.can_id, table.dlc, table.payload, label=np.arange(3000) % 3 == 0)
    path = tmp_path / "out" / "drive.csv"
    write_csv(table, path)
    assert not list(path.parent.glob(".*.tmp"))
    back = read_capture(path)
    for column in ("can_id", "dlc", "payload", "label"):
        assert np.array_equal(getattr(back, column), getattr(table, column)), column
    np.testing.assert_allclose(back.timestamp, table.timestamp, rtol=0, atol=5e-7)
    # byte for byte what "%.6f,%03X,<hex of DLC bytes>,%d" gives, ties and odd values included
    timestamps = [0.0, -0.0, 1.5, 0.0000005, 2.5e-6, 1717548054.1234565, -3.25, 1e17, float("nan"), float("inf")]
    n = len(timestamps)
    odd = FrameTable.from_frames(
        timestamps, [0, 0x7FF, 0x800, 0xFFF, 0x1000, 0x1ABCDEF, 0x1FFFFFFF, 5, 0x10, 0xABC], np.arange(n) % 10,
        np.tile(np.arange(8, dtype=np.uint8) * 17, (n, 1)), label=np.arange(n) % 2,
    )
    write_csv(odd, path)
    expected = [
        f"{t:.6f},{i:03X},{row[:d].tobytes().hex().upper()},{label}"
        for t, i, d, row, label in zip(timestamps, odd.can_id, odd.dlc, odd.payload, odd.label)
    ]
    assert path.read_text().splitlines() == ["timestamp,arbitration_id,data_field,attack", *expected]
    write_csv(FrameTable.empty(), path)
    assert path.read_text() == "timestamp,arbitration_id,data_field,attack\n"


# ============================================================================ Car-Hacking

CAR_HACKING = """\
1478198376.389427,0316,8,05,21,68,09,21,21,00,6f,R
1478198376.389636,018f,8,fe,5b,00,00,00,3c,00,00,R
1478198376.389864,0000,8,00,00,00,00,00,00,00,00,T
1478198376.390000,02b0,5,ff,7f,00,05,49,R
1478198376.390100,0000,8,00,00,00,00,00,00,00,00,T
1478198376.390200,01f1,0,R
"""


@pytest.mark.parametrize(
    ("name", "attack"),
    [("DoS_dataset.csv", "dos"), ("Fuzzy_dataset.csv", "fuzzy"), ("gear_dataset.csv", "spoof_gear"),
     ("RPM_dataset.csv", "spoof_rpm"), ("capture.csv", "attack")],
)
def test_car_hacking_csv_labels_and_attack_names(tmp_path, name, attack):
    path = write(tmp_path, name, CAR_HACKING)
    assert detect_format(path).name == "hcrl_ch"
    assert CarHackingCsv().attack_name(path) == attack
    table = read_capture(path)
    assert len(table) == 6 and table.label.tolist() == [0, 0, 1, 0, 1, 0]
    assert table.attack_names == ("normal", attack)
    assert table.attack_type.tolist() == [0, 0, 1, 0, 1, 0]
    assert table.dlc.tolist() == [8, 8, 8, 5, 8, 0]
    assert payload_bytes(table, 3) == bytes.fromhex("ff7f000549")
    assert table.can_id.tolist()[:2] == [0x316, 0x18F]


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ("1478198376.5,0316,8,05,21,68,09,21,21,00,zz,R", "data", "not a hex byte: 'zz'"),
        ("1478198376.5,0316,8,05,21,68,09,21,21,00,R", "row", "the number of data bytes does not match the DLC"),
        ("1478198376.5,0316,2,05,21,68,R", "row", "does not match the DLC"),
        ("1478198376.5,0316,9,05,21,68,09,21,21,00,00,00,R", "dlc", "expected a DLC of 0-8"),
        ("1478198376.5,03x6,2,05,21,R", "can_id", "not a hex CAN ID"),
        ("NaN,0316,2,05,21,R", "timestamp", "not a finite number"),
        ("1478198376.5,0316,2,05,21,X", "label", "expected R or T: 'X'"),
        ("1478198376.5,0316", "row", "expected at least 4 fields: '1478198376.5,0316'"),
    ],
)
def test_car_hacking_csv_malformed_rows(tmp_path, row, field, reason):
    lines = CAR_HACKING.splitlines()
    path = write(tmp_path, "DoS_dataset.csv", "\n".join(lines[:3] + [row] + lines[3:]) + "\n")
    assert reason in bad_row(path, 4, field)
    table = skipped(path)
    assert len(table) == 6 and table.bad_rows == 1 and table.attack_rows == 2


def test_car_hacking_text_log(tmp_path):
    text = (
        "Timestamp: 1479121434.850202        ID: 0350    000    DLC: 8    05 28 84 66 6d 00 00 a2\n"
        "Timestamp: 1479121434.850423        ID: 02c0    000    DLC: 2    14 00\n"
        "Timestamp: 1479121434.850977        ID: 0430    000    DLC: 0\n"
    )
    path = write(tmp_path, "normal_run_data.txt", text)
    assert detect_format(path).name == "hcrl_ch_txt"
    table = read_capture(path)
    assert table.can_id.tolist() == [0x350, 0x2C0, 0x430] and table.dlc.tolist() == [8, 2, 0]
    assert payload_bytes(table, 0) == bytes.fromhex("052884666d0000a2")
    assert table.attack_rows == 0 and table.attack_names == ("normal",)

    bad = write(tmp_path, "bad.txt", text + "Timestamp: 1479121434.9        ID: 0350    000    DLC: 8    05 28\n"
                "Timestamp: 1479121435.0  ID: 0350  000  DLC: 1  g5\n")
    assert "does not match the DLC" in bad_row(bad, 4, "row")
    table = skipped(bad)
    assert len(table) == 3 and table.bad_rows == 2


# ============================================================================ PCAN trace

TRC = """\
;$FILEVERSION=1.1
;$STARTTIME=45790.7029485648
;
;   Start time: 5/13/2025 16:52:14.756.0
;   Generated by PCAN-View v4.3.4.615
;---+--   ----+----  --+--  ----+---  +  -+ -- -- -- -- -- -- --
     1)       198.9  Rx         01A4  8  00 00 00 00 00 00 00 27 
     2)       200.6  Rx         018E  3  00 06 29 
     3)       201.0  Tx     18DAF110  2  02 10 
     4)       202.5  Warng  FFFFFFFF  4  00 00 00 08  BUSHEAVY
     5)       203.0  Rx         0123  4  RTR 
"""


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_trc_v11_rows_remote_frames_and_events(tmp_path, newline):
    path = write(tmp_path, "drive.trc", TRC.replace("\n", newline).encode())
    assert detect_format(path).name == "trc"
    table = read_capture(path)
    assert table.can_id.tolist() == [0x1A4, 0x18E, 0x18DAF110, 0x123]  # the Warng event is no frame
    assert table.dlc.tolist() == [8, 3, 2, 4]
    assert payload_bytes(table, 1) == bytes.fromhex("000629") and not table.payload[3].any()
    start = ole_to_unix(45790.7029485648)
    np.testing.assert_allclose(table.timestamp - start, [0.1989, 0.2006, 0.2010, 0.2030], atol=1e-6)


def test_trc_without_start_time_keeps_offsets(tmp_path):
    path = write(tmp_path, "drive.trc", TRC.replace(";$STARTTIME=45790.7029485648\n", ""))
    assert read_capture(path).timestamp[0] == pytest.approx(0.1989)


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ("     9)       210.0  Rx         01A4  8  00 00 00 00 00 00 00 2G", "data", "not a hex byte: '2G'"),
        ("     9)       210.0  Rx         01A4  8  00 00 00", "row", "does not match the DLC"),
        ("     9)       nan    Rx         01A4  1  00", "time_offset", "not a finite number"),
        ("     9        210.0  Rx         01A4  1  00", "message_number", "expected 'N)'"),
        ("     9)       210.0  Rx         01Z4  1  00", "can_id", "not a hex CAN ID"),
        ("     9)       210.0  Rx", "row", "expected 'N) offset type ID DLC data...'"),
        ("     9)       210.0  01A4  1  00", "type", "expected Rx or Tx"),
    ],
)
def test_trc_malformed_rows(tmp_path, row, field, reason):
    path = write(tmp_path, "bad.trc", TRC + row + "\n     10)      211.0  Rx         0100  1  01\n")
    assert reason in bad_row(path, 12, field)
    table = skipped(path)
    assert len(table) == 5 and table.bad_rows == 1


def test_trc_other_versions_through_python_can(tmp_path):
    table = random_table(50)
    path = tmp_path / "v21.trc"
    with can.TRCWriter(path) as writer:
        for i in range(len(table)):
            writer.on_message_received(can.Message(
                timestamp=table.timestamp[i], arbitration_id=int(table.can_id[i]),
                is_extended_id=bool(table.can_id[i] > 0x7FF), data=payload_bytes(table, i)))
    assert ";$FILEVERSION=2.1" in path.read_text()
    assert detect_format(path).name == "trc"
    back = read_capture(path)
    assert np.array_equal(back.can_id, table.can_id) and np.array_equal(back.payload, table.payload)
    np.testing.assert_allclose(back.timestamp, table.timestamp, rtol=0, atol=2e-6)

    with pytest.raises(KdcoreError, match="version '1.2' is not supported"):
        read_capture(write(tmp_path, "v12.trc", TRC.replace("1.1", "1.2", 1)))


# ============================================================================ Vector asc / blf


def _messages(table: FrameTable) -> list[can.Message]:
    return [
        can.Message(timestamp=float(table.timestamp[i]), arbitration_id=int(table.can_id[i]),
                    is_extended_id=bool(table.can_id[i] > 0x7FF), data=payload_bytes(table, i))
        for i in range(len(table))
    ]


def _write_with(writer_class, path: Path, messages) -> Path:
    with writer_class(path) as writer:
        for message in messages:
            writer.on_message_received(message)
    return path


@pytest.mark.parametrize(("writer", "name", "format_name"), [(can.ASCWriter, "log.asc", "asc"), (can.BLFWriter, "log.blf", "blf")])
def test_vector_round_trip_through_python_can_writers(tmp_path, writer, name, format_name):
    # start past .100 s: python-can's ASCWriter writes the header's milliseconds unpadded (".1" for 1 ms)
    table = random_table(300, seed=3, start=1717548054.5)
    extra = [can.Message(timestamp=float(table.timestamp[-1]) + 0.01, arbitration_id=0x321, is_remote_frame=True, dlc=3),
             can.Message(timestamp=float(table.timestamp[-1]) + 0.02, is_error_frame=True)]
    path = _write_with(writer, tmp_path / name, _messages(table) + extra)
    assert detect_format(path).name == format_name
    back = read_capture(path)
    assert len(back) == len(table) + 1  # the remote frame is kept, the error frame is not
    assert np.array_equal(back.can_id[:-1], table.can_id) and np.array_equal(back.payload[:-1], table.payload)
    assert np.array_equal(back.dlc[:-1], table.dlc)
    assert (back.can_id[-1], back.dlc[-1]) == (0x321, 3) and not back.payload[-1].any()
    # absolute times: asc keeps its start to the millisecond (python-can's ASCWriter), blf exactly
    tolerance = 1.001e-3 if format_name == "asc" else 1e-6
    np.testing.assert_allclose(back.timestamp[:-1] - back.timestamp[0], table.timestamp - table.timestamp[0], atol=2e-6)
    assert abs(back.timestamp[0] - table.timestamp[0]) <= tolerance


def test_blf_is_detected_by_magic_whatever_its_name(tmp_path):
    path = _write_with(can.BLFWriter, tmp_path / "capture.log", _messages(random_table(5)))
    assert detect_format(path).name == "blf"
    with pytest.raises(KdcoreError, match="not a BLF file"):
        read_capture(write(tmp_path, "short.blf", b"LOGG\x90\x00\x00\x00"))


def test_blf_corrupt_object(tmp_path):
    path = tmp_path / "log.blf"
    with can.BLFWriter(path, compression_level=0) as writer:
        for message in _messages(random_table(200)):
            writer.on_message_received(message)
    data = bytearray(path.read_bytes())
    second = data.index(b"LOBJ", data.index(b"LOBJ", data.index(b"LOBJ") + 1) + 1)  # a frame inside the container
    data[second : second + 4] = b"XXXX"
    path.write_bytes(bytes(data))
    message = bad_row(path, 2, "object")
    assert "python-can could not read it" in message
    table = skipped(path)
    assert len(table) == 1 and table.bad_rows == 1


ASC_HEADER = "date Wed Jun 05 00:40:54.420 2024\nbase hex  timestamps absolute\ninternal events logged\n"


def test_asc_rows_dates_and_malformed_rows(tmp_path):
    rows = [
        "Begin Triggerblock Wed Jun 05 00:40:54.420 2024",
        "   0.000000 Start of measurement",
        "   0.001000 1  1F4             Rx   d 2 00 01",
        "   0.002000 1  1F5x            Rx   d 1 AA",
        "   0.003000 1  1F6             Rx   d 2 00 zz",
        "   0.004000 1  1F7             Rx   d 4 00 01",
        "   0.005000 1  1F8             Rx   d 1 02",
        "End TriggerBlock",
    ]
    path = write(tmp_path, "log.asc", ASC_HEADER + "\n".join(rows) + "\n")
    assert detect_format(path).name == "asc"
    assert "python-can could not parse it" in bad_row(path, 8, "row")
    table = skipped(path)
    assert table.can_id.tolist() == [0x1F4, 0x1F5, 0x1F8] and table.bad_rows == 2
    # the header date is read as UTC: 2024-06-05 00:40:54.420 UTC is 1717548054.42
    np.testing.assert_allclose(table.timestamp, 1717548054.42 + np.array([0.001, 0.002, 0.005]), atol=1e-6)
    too_few = skipped(write(tmp_path, "short.asc", ASC_HEADER + "\n".join(rows[:3] + rows[5:6]) + "\n"))
    assert too_few.bad_rows == 1 and len(too_few) == 1


def test_asc_without_header_lines_keeps_its_first_row(tmp_path):
    path = write(tmp_path, "bare.asc", "   0.001000 1  1F4             Rx   d 2 00 01\n   0.002000 1  1F5             Rx   d 0\n")
    assert detect_format(path).name == "asc"
    table = read_capture(path)
    assert table.can_id.tolist() == [0x1F4, 0x1F5] and table.timestamp.tolist() == [0.001, 0.002]


# ============================================================================ BUSMASTER

BUSMASTER = """\
***BUSMASTER Ver 3.2.0***
***PROTOCOL CAN***
***[START LOGGING SESSION]***
***START DATE AND TIME 13:5:2025 23:59:59:900***
***HEX***
***SYSTEM MODE***
***<Time><Tx/Rx><Channel><CAN ID><Type><DLC><DataBytes>***
23:59:59:950 Rx 1 0x158 s 8 00 00 00 00 00 00 00 28
23:59:59:9990 Tx 2 0x18DAF110 x 2 02 10
00:00:00:010 Rx 1 0x158 sr 4
00:00:00:020 Rx 1 0x159 s 0
"""


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_busmaster_dates_midnight_and_frame_types(tmp_path, newline):
    path = write(tmp_path, "vss.log", BUSMASTER.replace("\n", newline).encode())
    assert detect_format(path).name == "busmaster"
    table = read_capture(path)
    midnight = 1747094400.0  # 2025-05-13 00:00 UTC
    np.testing.assert_allclose(table.timestamp - midnight, [86399.95, 86399.999, 86400.01, 86400.02], atol=1e-6)
    assert table.can_id.tolist() == [0x158, 0x18DAF110, 0x158, 0x159]
    assert table.dlc.tolist() == [8, 2, 4, 0] and not table.payload[2].any()

    no_date = read_capture(write(tmp_path, "nodate.log", BUSMASTER.replace("13:5:2025 23:59:59:900", "")))
    assert no_date.timestamp[0] == pytest.approx(86399.95)
    absolute = "\n".join(BUSMASTER.splitlines()[:7]).replace("SYSTEM MODE", "ABSOLUTE MODE")
    absolute += "\n00:00:01:050 Rx 1 0x158 s 0\n25:00:02:010 Rx 1 0x158 s 0\n"
    table = read_capture(write(tmp_path, "absolute.log", absolute))
    np.testing.assert_allclose(table.timestamp - (midnight + 86399.9), [1.05, 90002.01], atol=1e-6)
    relative = absolute.replace("ABSOLUTE MODE", "RELATIVE MODE")
    table = read_capture(write(tmp_path, "relative.log", relative))
    np.testing.assert_allclose(table.timestamp - (midnight + 86399.9), [1.05, 90003.06], atol=1e-6)


def test_busmaster_decimal_mode(tmp_path):
    text = "***BUSMASTER Ver 3.2.0***\n***DEC***\n***SYSTEM MODE***\n17:27:45:532 Rx 1 344 s 3 0 255 40\n"
    table = read_capture(write(tmp_path, "dec.log", text))
    assert table.can_id.tolist() == [344] and payload_bytes(table, 0) == bytes([0, 255, 40])


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ("17:27:45:5x3 Rx 1 0x158 s 1 00", "time", "expected hh:mm:ss:ms"),
        ("17:27:45 Rx 1 0x158 s 1 00", "time", "expected hh:mm:ss:ms"),
        ("17:67:45:532 Rx 1 0x158 s 1 00", "time", "expected hh:mm:ss:ms"),
        ("17:27:45:532 Rx 1 0x158 s 2 00", "row", "does not match the DLC"),
        ("17:27:45:532 Rx 1 0x158 s 1 0G", "data", "not a hex byte"),
        ("17:27:45:532 Rx 1 0x1Q8 s 1 00", "can_id", "not a hex CAN ID"),
        ("17:27:45:532 Rx 1 0x158 q 1 00", "type", "expected s, x, sr or xr"),
        ("17:27:45:532 Qx 1 0x158 s 1 00", "direction", "expected Rx or Tx"),
        ("17:27:45:532 Rx 1", "row", "expected 'time Tx/Rx channel ID type DLC data...'"),
    ],
)
def test_busmaster_malformed_rows(tmp_path, row, field, reason):
    text = "***BUSMASTER Ver 3.2.0***\n***HEX***\n17:27:45:500 Rx 1 0x158 s 1 00\n" + row + "\n17:27:45:600 Rx 1 0x158 s 0\n"
    path = write(tmp_path, "bad.log", text)
    assert reason in bad_row(path, 4, field)
    table = skipped(path)
    assert len(table) == 2 and table.bad_rows == 1


# ============================================================================ attack sidecars


def test_sidecar_labels_intervals_and_ids(tmp_path):
    table = random_table(1000, start=1000.0)
    path = tmp_path / "drive.log"
    write_candump(table, path)
    t = table.timestamp
    target = int(table.can_id[500])
    sidecar = sidecar_path(path)
    assert sidecar.name == "drive.log.attacks.csv"
    sidecar.write_text(
        "start,end,attack,can_id\n"
        f"{t[100]:.6f},{t[199]:.6f},dos,\n"
        "# a comment line\n\n"
        f"{t[400]:.6f},{t[600]:.6f},spoof_gear,0x{target:X}\n"
        f"{t[150]:.6f},{t[159]:.6f},fuzzy,\n"
    )
    labelled = read_capture(path)
    assert labelled.attack_names == ("normal", "dos", "spoof_gear", "fuzzy")
    expected = np.zeros(len(table), np.uint8)
    expected[100:200] = 1
    in_gear = (np.arange(len(table)) >= 400) & (np.arange(len(table)) <= 600) & (table.can_id == target)
    expected[in_gear] = 2
    expected[150:160] = 3  # later rows win
    assert np.array_equal(labelled.attack_type, expected)
    assert np.array_equal(labelled.label, (expected > 0).astype(np.uint8))
    # the sidecar works for every unlabelled format: same frames, read with another reader
    unlabelled = read_capture(path, format="candump")
    assert unlabelled.attack_rows == labelled.attack_rows


def test_sidecar_needs_no_can_id_column_and_warns_on_an_empty_interval(tmp_path):
    path = write(tmp_path, "a.log", "(1.0) can0 100#00\n(2.0) can0 101#01\n(3.0) can0 102#02\n")
    sidecar_path(path).write_text("start,end,attack\n1.5,2.5,replay\n10,11,dos\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = read_capture(path)
    assert table.label.tolist() == [0, 1, 0] and table.attack_names == ("normal", "replay")
    assert any("covers no frame" in str(w.message) for w in caught)


@pytest.mark.parametrize(
    ("content", "line", "field"),
    [
        ("start,end\n1,2\n", 1, "header"),
        ("start,end,attack,extra\n1,2,dos,x\n", 1, "header"),
        ("start,end,attack\n1,2,dos\nx,3,dos\n", 3, "start"),
        ("start,end,attack\n1,nan,dos\n", 2, "end"),
        ("start,end,attack\n3,2,dos\n", 2, "end"),
        ("start,end,attack\n1,2,normal\n", 2, "attack"),
        ("start,end,attack,can_id\n1,2,dos,zz\n", 2, "can_id"),
        ("start,end,attack\n1,2\n", 2, "row"),
    ],
)
def test_malformed_sidecar_rows_always_raise(tmp_path, content, line, field):
    path = write(tmp_path, "a.log", "(1.0) can0 100#00\n")
    sidecar = sidecar_path(path)
    sidecar.write_text(content)
    for mode in ("error", "skip"):
        with pytest.raises(BadRowError) as caught:
            read_capture(path, on_bad_rows=mode)
        assert str(caught.value).startswith(f"{sidecar}:{line}: {field}: ")


def test_sidecar_next_to_a_labelled_capture_is_refused(tmp_path):
    path = write(tmp_path, "DoS_dataset.csv", CAR_HACKING)
    sidecar_path(path).write_text("start,end,attack\n1,2,dos\n")
    with pytest.raises(KdcoreError, match="carries its own labels"):
        read_capture(path)


# ============================================================================ the scanner


def test_chunked_reading_gives_the_same_tables(tmp_path):
    files = {
        "candump": write(tmp_path, "a.log", CANDUMP + "(9.0) can0 1X1#01\n(9.1) can0 101#01\n"),
        "hcrl_ch": write(tmp_path, "DoS_dataset.csv", CAR_HACKING + "1.0,0316,2,05,R\n" + CAR_HACKING),
        "trc": write(tmp_path, "a.trc", TRC + "     9)       210.0  Rx         01A4  8  00\n" + TRC.split("\n", 6)[6]),
        "busmaster": write(tmp_path, "bm.log", BUSMASTER + "00:00:01:000 Rx 1 0x15Z s 0\n00:00:02:000 Rx 1 0x15A s 0\n"),
    }
    for name, path in files.items():
        whole = skipped(path)
        first_bad = str(pytest.raises(BadRowError, read_capture, path).value)
        chunked = FrameTable.concat(list(capture_chunks(path, on_bad_rows="skip", chunk_bytes=64)))
        assert chunked.bad_rows == whole.bad_rows == 1, name
        assert chunked.attack_names == whole.attack_names
        for column in ("timestamp", "can_id", "dlc", "payload", "label", "attack_type", "extended", "remote"):
            assert np.array_equal(getattr(chunked, column), getattr(whole, column)), (name, column)
        assert str(pytest.raises(BadRowError, lambda: list(capture_chunks(path, chunk_bytes=64))).value) == first_bad


def test_every_format_has_a_name_description_and_is_found_by_name():
    for capture_format in installed_formats():
        assert format_by_name(capture_format.name) is capture_format
        assert capture_format.description
