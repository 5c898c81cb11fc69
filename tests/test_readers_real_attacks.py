"""The real attack captures in ../shared/data/real, read by the formats that detect them, against
the independent counts in ATTACK-COUNTS.tsv (frames, distinct CAN IDs, attack rows), and what
each layout means: attack names, 29-bit IDs, captures without timestamps, bad rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdcore.data.formats import detect_format, read_capture
from kdcore.data.formats.chunks import capture_chunks
from kdcore.data.frames import BadRowError, FrameTable

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
COUNTS = REAL / "ATTACK-COUNTS.tsv"
needs_real = pytest.mark.skipif(
    not COUNTS.is_file(), reason="../shared/data/real/ATTACK-COUNTS.tsv is not present: real attack captures need the shared data folder"
)
FORMATS = {  # the format each collection's layout is detected as
    "j1939-systemscyber/labeled_TSC1.csv": "j1939_csv",
    "j1939-systemscyber": "candump_console",
    "road-statgraph": "road",
    "similarity-can-ids": "labelled_candump",
}
SIMILARITY = REAL / "similarity-can-ids" / "test_data.log"


def _counts():
    if not COUNTS.is_file():
        return [pytest.param(None, None, None, None, id="no-shared-data")]
    rows = [line.split("\t") for line in COUNTS.read_text().splitlines() if line.strip()]
    return [pytest.param(name, int(frames), int(ids), None if attacks == "-" else int(attacks), id=name) for name, frames, ids, attacks in rows]


def _format(name: str) -> str:
    return FORMATS.get(name) or FORMATS[name.split("/")[0]]


@needs_real
@pytest.mark.parametrize(("name", "frames", "ids", "attacks"), _counts())
def test_every_attack_capture_matches_the_independent_counts(name, frames, ids, attacks):
    path = REAL / name
    assert detect_format(path).name == _format(name)
    # similarity-can-ids has 31 lines of an ID without '#data' (made so by its awk conversion):
    # bad rows, left out of the count, so it is read skipping them
    table = read_capture(path, on_bad_rows="skip" if path == SIMILARITY else "error")
    assert len(table) == frames
    assert len(np.unique(table.can_id)) == ids
    assert table.attack_rows == (attacks or 0)
    assert table.error_frames == 0 and not table.remote.any()


@needs_real
def test_the_labelled_j1939_csv_names_its_attack_and_keeps_29_bit_ids():
    table = read_capture(REAL / "j1939-systemscyber" / "labeled_TSC1.csv")
    assert table.attack_names == ("normal", "high_torque_command")
    assert table.extended.all() and table.timestamps
    # the first row: 0.0,can0,217058307,8,1804FA2BFFFFFFFF,...: ID 0x0CF00C03 (priority 3, PGN 61452, source 3)
    assert (table.can_id[0], table.dlc[0], table.timestamp[0]) == (0x0CF00C03, 8, 0.0)
    assert table.payload[0].tobytes() == bytes.fromhex("1804FA2BFFFFFFFF")
    # the TSC1 attack forges PGN 0 (Torque/Speed Control 1) from source address 0x0B
    attacks = table.take(table.label == 1)
    assert set(((attacks.can_id >> 8) & 0x3FFFF).tolist()) == {0} and set((attacks.can_id & 0xFF).tolist()) == {0x0B}


@needs_real
def test_the_labelled_csv_and_the_console_log_of_the_same_drive_agree():
    """labeled_TSC1.csv is tsc1.log labelled: the same frames, read by two formats."""
    csv = read_capture(REAL / "j1939-systemscyber" / "labeled_TSC1.csv")
    log = read_capture(REAL / "j1939-systemscyber" / "Application_Layer" / "tsc1.log")
    for column in ("can_id", "dlc", "payload", "extended"):
        assert np.array_equal(getattr(csv, column), getattr(log, column)), column
    np.testing.assert_allclose(csv.timestamp, log.timestamp, rtol=0, atol=1e-6)


@needs_real
def test_j1939_console_logs_are_zero_based_times_of_29_bit_frames():
    table = read_capture(REAL / "j1939-systemscyber" / "normal.log")
    assert table.timestamps and table.timestamp[0] == 0.0 and table.timestamp[1] == pytest.approx(0.005001)
    assert np.all(np.diff(table.timestamp) >= 0) and 29.9 < table.timestamp[-1] < 30.1
    assert table.extended.all() and (table.can_id[0], table.dlc[0]) == (0x18FCF200, 8)


@needs_real
@pytest.mark.parametrize(
    ("file", "attack"),
    [("Deal_correlated_signal_attack_1_masquerade.csv", "correlated_signal"),
     ("Deal_max_engine_coolant_temp_attack_masquerade.csv", "max_engine_coolant_temp"),
     ("Deal_reverse_light_on_attack_1_masquerade.csv", "reverse_light_on")],
)
def test_road_captures_have_positions_eight_bytes_and_the_file_names_the_attack(file, attack):
    table = read_capture(REAL / "road-statgraph" / file)
    assert not table.timestamps and np.array_equal(table.timestamp, np.arange(len(table)))
    assert table.attack_names == ("normal", attack)
    assert (table.dlc == 8).all() and not table.extended.any()
    # the first row of Deal_correlated_signal_attack_1_masquerade.csv: 852,32,10,0,0,0,2,116,128,0.0
    if file.startswith("Deal_correlated"):
        assert (table.can_id[0], table.payload[0].tolist(), table.label[0]) == (852, [32, 10, 0, 0, 0, 2, 116, 128], 0)
    # a masquerade forges the frames of one ID at their usual rate: the attacked IDs are few
    assert 1 <= len(np.unique(table.can_id[table.label == 1])) <= 3


@needs_real
def test_road_read_in_chunks_keeps_positions_across_blocks():
    path = REAL / "road-statgraph" / "Deal_max_engine_coolant_temp_attack_masquerade.csv"
    whole = read_capture(path)
    chunks = list(capture_chunks(path, chunk_bytes=1 << 16))
    assert len(chunks) > 10
    chunked = FrameTable.concat(chunks)
    assert not chunked.timestamps and np.array_equal(chunked.timestamp, np.arange(len(whole)))
    for column in ("can_id", "payload", "label", "attack_type"):
        assert np.array_equal(getattr(chunked, column), getattr(whole, column)), column


@needs_real
def test_the_similarity_log_is_dos_without_timestamps_and_its_ids_without_data_are_bad_rows():
    with pytest.raises(BadRowError) as caught:
        read_capture(SIMILARITY)
    assert str(caught.value) == f"{SIMILARITY}:40: frame: expected ID#data: '5a0'"
    table = read_capture(SIMILARITY, on_bad_rows="skip")
    assert table.bad_rows == 31 and not table.timestamps
    assert table.attack_names == ("normal", "dos")
    # the log is its normal frames, then the DoS frames
    first = np.flatnonzero(table.label)[0]
    assert not table.label[:first].any() and table.label[first:].all()
