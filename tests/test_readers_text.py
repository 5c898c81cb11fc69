"""The text engine under every text format: lines and blocks (line ends, BOM, over-long lines,
resuming at a block), rows split by pyarrow, fields decoded with numpy, and bad rows reported in
line order."""

from __future__ import annotations

import pyarrow as pa
import pytest

from kdcore.data.formats.text import MAX_LINE_BYTES, Fields, Problems, csv_rows, split_lines, split_rows, text_blocks
from kdcore.data.frames import BadRowError, RowErrors


def lines_of(path, chunk_bytes, offset=0, line=1, on_bad_rows="error"):
    errors = RowErrors(path, on_bad_rows)
    found = []
    for block in text_blocks(path, errors, chunk_bytes, offset, line):
        found += [(int(block.number[i]), block.data[block.start[i] : block.end[i]]) for i in range(len(block))]
    return found, errors


# ============================================================================ lines and blocks


def test_lines_end_at_lf_crlf_and_a_lone_cr():
    lines = split_lines(b"a\r\nb\rc\n\nd")
    assert [lines.data[s:e] for s, e in zip(lines.start, lines.end)] == [b"a", b"b", b"c", b"", b"d"]
    assert lines.number.tolist() == [1, 2, 3, 4, 5]
    assert len(split_lines(b"a\n")) == 1 and len(split_lines(b"")) == 0


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 1 << 20])
def test_blocks_give_the_same_lines_whatever_their_size(tmp_path, chunk_bytes):
    path = tmp_path / "t.txt"
    path.write_bytes(b"\xef\xbb\xbfone\r\ntwo\rthree\r\n\rfive\nsix")
    found, _ = lines_of(path, chunk_bytes)
    assert found == [(1, b"one"), (2, b"two"), (3, b"three"), (4, b""), (5, b"five"), (6, b"six")]


def test_a_block_can_be_resumed_at_its_offset_and_line(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"".join(b"line %d\r\n" % k for k in range(1, 200)))
    blocks = list(text_blocks(path, RowErrors(path), 100))
    assert len(blocks) > 10
    middle = blocks[7]
    found, _ = lines_of(path, 100, middle.offset, middle.line)
    assert found[0] == (middle.line, b"line %d" % middle.line) and found[-1] == (199, b"line 199")


def test_an_over_long_line_is_a_bad_row_passed_over_unheld(tmp_path):
    path = tmp_path / "t.txt"
    long = b"x" * (MAX_LINE_BYTES + 10)
    path.write_bytes(b"a\n" + long + b"\r\nb\n" + long)  # one inside the text, one cut off by the end
    with pytest.raises(BadRowError, match=r"t\.txt:2: row: a line longer than any row \(more than 65536 bytes\): 'xxx"):
        lines_of(path, 1 << 20)
    for chunk_bytes in (1000, 1 << 20):
        found, errors = lines_of(path, chunk_bytes, on_bad_rows="skip")
        assert found == [(1, b"a"), (3, b"b")] and errors.skipped == 2


# ============================================================================ fields


def fields(*values: bytes) -> Fields:
    return Fields.of(pa.array(values, type=pa.binary()).view(pa.string()))


def test_integers_hex_and_decimal():
    values, ok = fields(b"1A0", b"18DAF110", b" 0x7ff ", b"0X1", b"", b"0x", b"12G", b"123456789").uint(16, 8)
    assert ok.tolist() == [True, True, True, True, False, False, False, False]
    assert values[ok].tolist() == [0x1A0, 0x18DAF110, 0x7FF, 1]
    values, ok = fields(b"217058307", b"0", b"0x10", b"1" * 11, b"99").uint(10, 10)
    assert ok.tolist() == [True, True, False, False, True] and values[ok].tolist() == [217058307, 0, 99]
    values, ok = fields(b"8", b"08", b"9", b"100", b"f").uint(16, 2, prefix=False)
    assert ok.tolist() == [True, True, True, False, True] and values[ok].tolist() == [8, 8, 9, 15]


def test_hex_payloads_back_to_back_and_scattered():
    column = fields(b"0011223344556677", b"", b"AbCd")
    payload, dlc, ok = column.payload()  # back to back: decoded at once
    assert ok.all() and dlc.tolist() == [8, 0, 2] and payload[2].tolist() == [0xAB, 0xCD, 0, 0, 0, 0, 0, 0]
    payload, dlc, ok = fields(b"00FF", b"001", b" 01 ", b"0G", b"00" * 9).payload()
    assert ok.tolist() == [True, False, True, False, False] and payload[0, :2].tolist() == [0, 255] and payload[2, 0] == 1
    scattered = Fields(column.data, column.start[::-1], column.length[::-1])  # not back to back
    payload, dlc, ok = scattered.payload()
    assert ok.all() and dlc.tolist() == [2, 0, 8] and payload[2].tolist() == [0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]


def test_numbers_are_finite_decimals():
    values, ok = fields(b"1.5", b" -2 ", b"3e-3", b"nan", b"inf", b"1e999", b"1.0 s", b"").floats()
    assert ok.tolist() == [True, True, True, False, False, False, False, False]
    assert values[ok].tolist() == [1.5, -2.0, 0.003]


def test_words_and_bytes():
    column = fields(b"Rx", b"RTR", b"Warng", b"", b"R2", b"remote")
    assert column.equals(b"Rx").tolist() == [True, False, False, False, False, False]
    assert column.startswith(b"R").tolist() == [True, True, False, False, True, False]
    assert column.letters().tolist() == [True, True, True, False, False, True]
    assert column.find(ord("e")).tolist() == [-1, -1, -1, -1, -1, 1]
    assert column.first().tolist()[:4] == [ord("R"), ord("R"), ord("W"), 0] and column.last()[2] == ord("g")
    assert column.cut(1, 1).text(5) == "emot"


# ============================================================================ rows and problems


def test_split_rows_by_whitespace_or_a_delimiter():
    lines = split_lines(b"  (1.0)  can0\t123#01 \n\n   \n(2.0) can1 7FF#\n", line=10)
    rows = split_rows(lines)
    assert rows.count.tolist() == [3, 3] and rows.number.tolist() == [10, 13]
    assert [rows.field(2).text(i) for i in range(2)] == ["123#01", "7FF#"]
    assert [rows.field(-1).text(i) for i in range(2)] == ["123#01", "7FF#"]
    rows = split_rows(split_lines(b"a,,b\r\nc\n"), ",")
    assert rows.count.tolist() == [3, 1] and rows.field(1).length.tolist() == [0, 0] and rows.field(2).text(0) == "b"


def test_csv_rows_and_their_bad_lines_in_line_order(tmp_path):
    lines = split_lines(b'h1,h2,h3\n1,"a,b",x\n\n2,3\n4,"5,6\n7,8,9\n', line=1)
    ignore = lines.number == 1  # the header
    rows, bad = csv_rows(lines, 3, [0, 1, 2], ",", '"', ignore)
    assert rows.number.tolist() == [2, 6] and rows.field(1).text(0) == "a,b"
    problems = Problems(rows, bad)
    problems.require(rows.field(0).equals(b"7") == False, "f", "not seven", rows.field(0))  # noqa: E712
    errors = RowErrors(tmp_path / "c.csv", "skip")
    assert problems.report(errors).tolist() == [True, False]
    assert errors.skipped == 3  # lines 4, 5 and 6, the first of which is reported
    assert errors.first == f"{tmp_path / 'c.csv'}:4: row: expected 3 fields, got 2: '2,3'"
