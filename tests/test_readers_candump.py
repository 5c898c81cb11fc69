"""candump's console output (every -t mode, remote and error frames), the LABEL ID#DATA log, and
the extended/remote/error-frame flags every reader sets from what its format says."""

from __future__ import annotations

import numpy as np
import pytest

from kdcore.data.formats import detect_format, read_capture
from kdcore.data.formats.candump import CandumpConsole
from kdcore.data.formats.chunks import capture_chunks, frame_index
from kdcore.data.formats.writers import write_candump
from kdcore.data.frames import BadRowError, FrameTable


def write(folder, name, text) -> object:
    path = folder / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def payload_bytes(table: FrameTable, i: int) -> bytes:
    return table.payload[i, : table.dlc[i]].tobytes()


# ============================================================================ console output

CONSOLE = """\
 (1618787934.854636)  can0  18FEDF00   [8]  8A A0 28 7D 7D FF FF F5
 (1618787934.854700)  can0       0C5   [3]  30 00 01
 (1618787934.854800)  can1  00000123   [2]  remote request
 (1618787934.854900)  can0  20000004   [8]  00 04 00 00 00 00 00 00   ERRORFRAME
\tcontroller-problem{rx-error-warning}
\terror-counter-tx-rx{{0}{96}}
 (1618787934.855000)  can0       7FF   [0]
"""


def test_console_frames_remote_and_error_frames(tmp_path):
    path = write(tmp_path, "console.log", CONSOLE)
    assert detect_format(path).name == "candump_console"
    table = read_capture(path)
    assert table.can_id.tolist() == [0x18FEDF00, 0x0C5, 0x123, 0x7FF]
    assert table.dlc.tolist() == [8, 3, 2, 0]
    assert payload_bytes(table, 0) == bytes.fromhex("8AA0287D7DFFFFF5") and payload_bytes(table, 1) == bytes.fromhex("300001")
    # 8 hex digits: a 29-bit ID, even a small one; 3 digits: an 11-bit one
    assert table.extended.tolist() == [True, False, True, False]
    # the remote frame keeps its DLC, with no data; the error frame (and its decoding) is no frame
    assert table.remote.tolist() == [False, False, True, False] and not table.payload[2].any()
    assert table.error_frames == 1 and table.bad_rows == 0
    assert table.timestamps and table.timestamp.tolist() == [1618787934.854636, 1618787934.8547, 1618787934.8548, 1618787934.855]


def test_console_zero_based_and_difference_times(tmp_path):
    rows = [(0.0, "0C5"), (0.005001, "0C6"), (0.000579, "0C7"), (0.0201, "0C8")]
    text = "".join(f" ({t:010.6f})  can0  {i}   [1]  AA\n" for t, i in rows)
    differences = read_capture(write(tmp_path, "td.log", text))  # goes down: -td, summed up
    np.testing.assert_allclose(differences.timestamp, [0.0, 0.005001, 0.00558, 0.02568], atol=1e-9)
    zero_based = read_capture(write(tmp_path, "tz.log", text), format=CandumpConsole(timing="times"))
    assert zero_based.timestamp.tolist() == [t for t, _ in rows]
    rising = "".join(f" ({t:010.6f})  can0  0C5   [0]\n" for t in (0.0, 0.01, 0.02))
    assert read_capture(write(tmp_path, "tz2.log", rising)).timestamp.tolist() == [0.0, 0.01, 0.02]
    steady = read_capture(write(tmp_path, "td2.log", rising), format=CandumpConsole(timing="differences"))
    np.testing.assert_allclose(steady.timestamp, [0.0, 0.01, 0.03])
    with pytest.raises(ValueError, match="timing must be one of"):
        CandumpConsole(timing="delta")


def test_console_difference_times_run_on_across_blocks(tmp_path):
    rng = np.random.default_rng(1)
    gaps = np.round(rng.uniform(0.0001, 0.002, 3000), 6)
    gaps[0] = 0.0
    path = write(tmp_path, "td.log", "".join(f" ({g:010.6f})  can0  {0x100 + k % 50:03X}   [1]  {k % 256:02X}\n" for k, g in enumerate(gaps)))
    whole = read_capture(path)
    np.testing.assert_allclose(whole.timestamp, np.cumsum(gaps), atol=1e-9)
    chunked = FrameTable.concat(list(capture_chunks(path, chunk_bytes=2000)))
    np.testing.assert_allclose(chunked.timestamp, whole.timestamp, atol=1e-9)
    index = frame_index(path, chunk_bytes=2000)
    assert len(index) > 20 and index[5].clock == pytest.approx(whole.timestamp[index[5].before - 1])
    resumed = FrameTable.concat(list(capture_chunks(path, start_frame=2500, index=index, chunk_bytes=2000)))
    np.testing.assert_allclose(resumed.timestamp, whole.timestamp[2500:], atol=1e-9)


def test_console_date_and_time_read_as_utc(tmp_path):
    text = (
        " (2021-04-18 19:18:54.854636)  can0  0C5   [8]  30 00 00 00 30 00 00 00\n"
        " (2021-04-18 19:18:55.000001)  can0  1C8   [2]  03 E8\n"
    )
    table = read_capture(write(tmp_path, "ta.log", text))
    assert table.timestamp[0] == pytest.approx(1618773534.854636, abs=1e-6)  # 2021-04-18 19:18:54.854636 UTC
    assert table.timestamp[1] - table.timestamp[0] == pytest.approx(0.145365, abs=1e-6)
    bad = write(tmp_path, "bad.log", text + " (2021-13-18 19:18:55.000001)  can0  1C8   [0]\n")
    message = str(pytest.raises(BadRowError, read_capture, bad).value)
    assert message == f"{bad}:3: timestamp: expected '(yyyy-mm-dd hh:mm:ss.ffffff)': '(2021-13-18 19:18:55.000001)'"


def test_console_without_timestamps_keeps_positions(tmp_path):
    text = "  can0  0C5   [2]  01 02\n  can0  18DAF110   [1]  FF\n  can0  0C6   [0]\n"
    table = read_capture(write(tmp_path, "bare.log", text))
    assert not table.timestamps and table.timestamp.tolist() == [0.0, 1.0, 2.0]
    assert table.can_id.tolist() == [0x0C5, 0x18DAF110, 0x0C6]


def test_console_extra_and_ascii_columns_are_passed_over(tmp_path):
    text = (
        " (0.000000)  can0  RX - -  0C5   [4]  41 20 42 43   'A BC'\n"  # -x and -a
        " (0.001000)  can0  TX B E  123   [1]  7E   '~'\n"
    )
    table = read_capture(write(tmp_path, "x.log", text))
    assert table.can_id.tolist() == [0x0C5, 0x123] and payload_bytes(table, 0) == b"A BC"


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        (" (0.5)  can0  0C5   [2]  01", "row", "fewer data bytes than the DLC says"),
        (" (0.5)  can0  0C5   [12]  01 02 03 04 05 06 07 08 09 0A 0B 0C", "dlc", "CAN FD frame with more than 8 data bytes"),
        (" (0.5)  can0  0C5   [x]  01", "dlc", "expected [DLC]"),
        (" (0.5)  can0  0G5   [1]  01", "can_id", "not a hex CAN ID"),
        (" (0.5)  can0  5FFFFFFF   [1]  01", "can_id", "more than 29 bits"),
        (" (0.5)  can0  0C5   [1]  0Z", "data", "not a hex byte: '0Z'"),
        (" (0.5)  can0  0C5  1  01", "row", "expected '(timestamp) interface ID [DLC] data'"),
        (" (nan)  can0  0C5   [1]  01", "timestamp", "not a finite number"),
    ],
)
def test_console_malformed_rows(tmp_path, row, field, reason):
    path = write(tmp_path, "bad.log", f" (0.1)  can0  0C5   [1]  01\n{row}\n (0.9)  can0  0C6   [0]\n")
    message = str(pytest.raises(BadRowError, read_capture, path, format="candump_console").value)
    assert message.startswith(f"{path}:2: {field}: {reason}"), message
    table = read_capture(path, format="candump_console", on_bad_rows="skip")
    assert table.can_id.tolist() == [0x0C5, 0x0C6] and table.bad_rows == 1


# ============================================================================ LABEL ID#DATA


def test_labelled_log_labels_positions_and_bad_rows(tmp_path):
    text = "0 080#0017dc09161116bb\r\n0 0a1#\r\n1 000#0000000000000000\r\n0 5a0\r\n1 18daf110#02\r\n"
    path = write(tmp_path, "test_data.log", text)
    assert detect_format(path).name == "labelled_candump"
    with pytest.raises(BadRowError, match=r"test_data\.log:4: frame: expected ID#data: '5a0'"):
        read_capture(path)
    table = read_capture(path, on_bad_rows="skip")
    assert table.can_id.tolist() == [0x080, 0x0A1, 0x000, 0x18DAF110] and table.dlc.tolist() == [8, 0, 8, 1]
    assert table.label.tolist() == [0, 0, 1, 1] and table.attack_names == ("normal", "dos")
    assert not table.timestamps and table.timestamp.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert table.extended.tolist() == [False, False, False, True] and table.bad_rows == 1
    label = write(tmp_path, "two.log", "0 080#00\n2 081#00\n")
    assert str(pytest.raises(BadRowError, read_capture, label, format="labelled_candump").value) == f"{label}:2: label: expected 0 or 1: '2'"


# ============================================================================ flags in the candump log


def test_candump_log_flags_and_error_frame_count(tmp_path):
    text = "(1.0) can0 00000123#01\n(1.1) can0 123#R3\n(1.2) can0 20000080#0000000000000000\n(1.3) can0 18DAF110#\n"
    table = read_capture(write(tmp_path, "drive.log", text))
    assert table.can_id.tolist() == [0x123, 0x123, 0x18DAF110]
    assert table.extended.tolist() == [True, False, True] and table.remote.tolist() == [False, True, False]
    assert table.dlc.tolist() == [1, 3, 0] and table.error_frames == 1


def test_write_candump_keeps_extended_and_remote_frames(tmp_path):
    table = FrameTable.from_frames(
        [1.0, 1.5, 2.0], [0x123, 0x7FF, 0x1A], [2, 3, 0], np.array([[1, 2, 0, 0, 0, 0, 0, 0], [0] * 8, [0] * 8]),
        extended=[False, False, True], remote=[False, True, False],
    )
    path = tmp_path / "replay.log"
    write_candump(table, path)
    assert path.read_text().splitlines() == [
        "(1.000000) can0 123#0102", "(1.500000) can0 7FF#R3", "(2.000000) can0 0000001A#",
    ]
    back = read_capture(path)
    for column in ("can_id", "dlc", "payload", "extended", "remote"):
        assert np.array_equal(getattr(back, column), getattr(table, column)), column
