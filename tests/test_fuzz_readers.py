"""Hostile and broken captures: every reader ends in a consistent table or a one-line error.

Property-based (hypothesis) over every installed format, detection by content and attack
sidecars. Inputs: valid captures rendered from random frames, then mutated (cut lines, bad hex,
a wrong or oversized DLC, NaN/inf/negative/out-of-order timestamps, fields and lines deleted or
duplicated, a BOM, CRLF or lone CR line ends, an over-long line, an empty file), and random bytes.
A read must return a ``FrameTable`` whose columns are consistent, or raise a ``KdcoreError`` whose
message is one line naming the file (``file:line: field: ...`` for a bad row); with
``on_bad_rows="skip"`` a bad row is counted in ``bad_rows`` instead. Any other exception is a
reader bug. Then: a huge single line and very many tiny lines are read in bounded memory and time.

The renderers, mutations and checks here are also what ``benchmarks/fuzz_readers.py`` runs for
minutes with a seed (``python benchmarks/fuzz_readers.py --seconds 300``).
"""

from __future__ import annotations

import contextlib
import re
import signal
import tempfile
import time
import tracemalloc
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import can
import numpy as np
import pytest
from can.io.blf import FILE_HEADER_SIZE, LOG_CONTAINER, LOG_CONTAINER_STRUCT, NO_COMPRESSION, OBJ_HEADER_BASE_STRUCT, ZLIB_DEFLATE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdcore.data.formats import format_by_name, installed_formats, read_capture, text
from kdcore.data.formats.labels import sidecar_path
from kdcore.data.frames import BadRowError, FrameTable, RowErrors
from kdcore.errors import KdcoreError

# moderate, deterministic (derandomize: the same examples on every run and machine), no example
# database written into the checkout, no per-example deadline (shared CI cores are slow)
FUZZ = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ROUND_TRIP = settings(FUZZ, max_examples=25)
NO_HANG_S = 60  # a generous bound per read: it catches hangs, it is no speed assertion

BASE = 1717548054.0  # 2024-06-05 00:40:54 UTC: every rendered capture starts here
MIDNIGHT = BASE - 2454.0
OLE_BASE_DAYS = 25569.0 + BASE / 86400.0  # BASE as a PCAN $STARTTIME
MAX_ID = 0x1FFFFFFF

Frame = tuple[float, int, bytes, int]  # timestamp, CAN ID, data (0-8 bytes), label
Pick = Callable[[int], int]  # pick(n): a number in range(n), from hypothesis or a seeded random


# ============================================================================ valid captures


def _lines(rows) -> bytes:
    return "".join(row + "\n" for row in rows).encode()


def _hex_bytes(data: bytes, upper: bool = True) -> str:
    return " ".join(f"{b:02X}" if upper else f"{b:02x}" for b in data)


def render_ctt(frames: list[Frame]) -> bytes:
    rows = [f"{t:.6f},{i:03X},{d.hex().upper()},{label}" for t, i, d, label in frames]
    return _lines(["timestamp,arbitration_id,data_field,attack", *rows])


def render_hcrl_ch(frames: list[Frame]) -> bytes:
    return _lines(
        ",".join([f"{t:.6f}", f"{i:04x}", str(len(d)), *(f"{b:02x}" for b in d), "T" if label else "R"])
        for t, i, d, label in frames
    )


def render_hcrl_ch_txt(frames: list[Frame]) -> bytes:
    return _lines(
        f"Timestamp: {t:.6f}        ID: {i:04x}    000    DLC: {len(d)}    {_hex_bytes(d, upper=False)}"
        for t, i, d, _ in frames
    )


def render_candump(frames: list[Frame]) -> bytes:
    """Frames labelled 1 as CAN FD rows with a direction field (candump keeps no labels)."""
    return _lines(
        f"({t:.6f}) can0 {f'{i:08X}' if i > 0x7FF else f'{i:03X}'}{'##1' if label else '#'}{d.hex().upper()}{' T' if label else ''}"
        for t, i, d, label in frames
    )


def _pcan_id(can_id: int) -> str:
    return f"{can_id:08X}" if can_id > 0x7FF else f"{can_id:04X}"  # PCAN: 8 digits mark an extended ID


def render_trc_v1(frames: list[Frame]) -> bytes:
    """PCAN-View v1.0 (no $FILEVERSION; read through python-can): times are offsets, no start time."""
    header = [";##########################################################################", ";   PCAN-View trace, v1.0", ";"]
    rows = [f"{n:>6}) {(t - BASE) * 1000:>11.3f}  {_pcan_id(i):>8}  {len(d)}  {_hex_bytes(d)}" for n, (t, i, d, _) in enumerate(frames, start=1)]
    return _lines(header + rows)


def render_trc_v13(frames: list[Frame]) -> bytes:
    """PCAN-View v1.3 (read through python-can)."""
    header = [";$FILEVERSION=1.3", f";$STARTTIME={OLE_BASE_DAYS!r}", ";"]
    rows = [
        f"{n:>7}) {(t - BASE) * 1000:>13.3f} 1  Rx  {_pcan_id(i):>8} -  {len(d)}  {_hex_bytes(d)}"
        for n, (t, i, d, _) in enumerate(frames, start=1)
    ]
    return _lines(header + rows)


def render_trc(frames: list[Frame]) -> bytes:
    """PCAN-View v1.1 (kdcore's own reader)."""
    header = [";$FILEVERSION=1.1", f";$STARTTIME={OLE_BASE_DAYS!r}", ";   Generated by PCAN-View", ";"]
    rows = [
        f"{n:>6})  {(t - BASE) * 1000:>12.3f}  Rx  {_pcan_id(i):>8}  {len(d)}  {_hex_bytes(d)}"
        for n, (t, i, d, _) in enumerate(frames, start=1)
    ]
    return _lines(header + rows)


def render_trc_v2(frames: list[Frame]) -> bytes:
    """PCAN-View v2.1 (read through python-can)."""
    header = [";$FILEVERSION=2.1", f";$STARTTIME={OLE_BASE_DAYS!r}", ";$COLUMNS=N,O,T,B,I,d,R,L,D", ";"]
    rows = [
        f"{n:>7} {(t - BASE) * 1000:13.3f} DT  1 {_pcan_id(i):>8} Rx -  {len(d):<4} {_hex_bytes(d)}"
        for n, (t, i, d, _) in enumerate(frames, start=1)
    ]
    return _lines(header + rows)


def render_asc(frames: list[Frame]) -> bytes:
    header = [
        "date Wed Jun 05 00:40:54.000 2024",
        "base hex  timestamps absolute",
        "internal events logged",
        "Begin Triggerblock Wed Jun 05 00:40:54.000 2024",
        "   0.000000 Start of measurement",
    ]
    rows = []
    for t, i, d, label in frames:
        can_id = f"{i:X}x" if i > 0x7FF else f"{i:X}"
        if label:  # frames labelled 1 as CAN FD rows, after an error frame (asc keeps no labels)
            rows.append(f"{t - BASE:>11.6f} 1  ErrorFrame")
            rows.append(f"{t - BASE:>11.6f} CANFD   1 Rx {can_id:>8}  1 0 {len(d):x} {len(d):>2} {_hex_bytes(d)}    0    0     1000 0 0 0 0 0")
        else:
            rows.append(f"{t - BASE:>11.6f} 1  {can_id:<15} Rx   d {len(d)} {_hex_bytes(d)}")
    return _lines(header + rows + ["End TriggerBlock"])


def render_blf(frames: list[Frame], compression_level: int = -1) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "capture.blf"
        with can.BLFWriter(path, compression_level=compression_level) as writer:
            for t, i, d, _ in frames:
                writer.on_message_received(can.Message(timestamp=t, arbitration_id=i, is_extended_id=i > 0x7FF, data=d))
        return path.read_bytes()


def render_candump_console(frames: list[Frame]) -> bytes:
    """``candump -ta`` on the console; frames labelled 1 after an error frame (it keeps no labels)."""
    rows = []
    for t, i, d, label in frames:
        can_id = f"{i:08X}" if i > 0x7FF else f"{i:03X}"
        if label:
            rows.append(f" ({t:.6f})  can0  20000004   [8]  00 04 00 00 00 00 00 00   ERRORFRAME")
            rows.append("\tcontroller-problem{rx-error-warning}")
        rows.append(f" ({t:.6f})  can0  {can_id:>8}   [{len(d)}]  {_hex_bytes(d)}".rstrip())
    return _lines(rows)


def render_candump_console_date(frames: list[Frame]) -> bytes:
    """``candump -tA``: the date and time (UTC here, as kdcore reads it); remote frames for label 1."""
    rows = []
    for t, i, d, label in frames:
        date = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(t))) + f".{round((t % 1) * 1e6):06d}"
        frame = f"[{len(d)}]  remote request" if label else f"[{len(d)}]  {_hex_bytes(d)}"
        rows.append(f" ({date})  can0  {f'{i:08X}' if i > 0x7FF else f'{i:03X}':>8}   {frame}".rstrip())
    return _lines(rows)


def render_candump_console_bare(frames: list[Frame]) -> bytes:
    """``candump`` without ``-t``: no timestamps."""
    return _lines(f"  can0  {f'{i:08X}' if i > 0x7FF else f'{i:03X}':>8}   [{len(d)}]  {_hex_bytes(d)}".rstrip() for _, i, d, _ in frames)


def render_labelled_candump(frames: list[Frame]) -> bytes:
    return _lines(f"{label} {f'{i:08x}' if i > 0x7FF else f'{i:03x}'}#{d.hex()}" for _, i, d, label in frames)


def render_j1939_csv(frames: list[Frame]) -> bytes:
    """The labelled J1939 CSV: decimal IDs, a quoted field with a comma, the attack named."""
    header = "timestamp,iface,can_id,dlc,data,pgn_label,label,rule_name"
    rows = [f'{t:.6f},can0,{i},{len(d)},{d.hex().upper()},"Engine Hours, Revolutions",{"high_torque" if label else "normal"},' for t, i, d, label in frames]
    return _lines([header, *rows])


def render_road(frames: list[Frame]) -> bytes:
    """ROAD (StatGraph): decimal ID and eight decimal bytes (the payload padded), label 0.0/1.0; no timestamps."""
    return _lines(",".join([str(i), *(str(b) for b in d.ljust(8, b"\0")), f"{label}.0"]) for _, i, d, label in frames)


def render_busmaster(frames: list[Frame]) -> bytes:
    header = [
        "***BUSMASTER Ver 3.2.0***",
        "***PROTOCOL CAN***",
        "***NOTE: PLEASE DO NOT EDIT THIS DOCUMENT***",
        "***[START LOGGING SESSION]***",
        "***START DATE AND TIME 5:6:2024 00:40:54:000***",
        "***HEX***",
        "***SYSTEM MODE***",
        "***<Time><Tx/Rx><Channel><CAN ID><Type><DLC><DataBytes>***",
    ]
    rows = []
    for t, i, d, _ in frames:
        micros = round((t - MIDNIGHT) * 1e6)
        seconds, fraction = divmod(micros, 1_000_000)
        clock = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}:{fraction:06d}"
        rows.append(f"{clock} Rx 1 0x{i:03X} {'x' if i > 0x7FF else 's'} {len(d)} {_hex_bytes(d)}".rstrip())
    return _lines(header + rows + ["***[STOP LOGGING SESSION]***"])


class Variant(NamedTuple):
    format: str
    render: Callable[[list[Frame]], bytes]
    keeps_labels: bool = False
    origin: float = 0.0  # what the reader's timestamps are relative to: 0 for absolute times, BASE for offsets
    timestamps: bool = True  # False: the capture has none, frames keep their positions
    eight_bytes: bool = False  # every frame has 8 bytes (the payload padded)


VARIANTS: dict[str, Variant] = {
    "ctt": Variant("ctt", render_ctt, keeps_labels=True),
    "hcrl_ch": Variant("hcrl_ch", render_hcrl_ch, keeps_labels=True),
    "hcrl_ch_txt": Variant("hcrl_ch_txt", render_hcrl_ch_txt),
    "candump": Variant("candump", render_candump),
    "trc": Variant("trc", render_trc),
    "trc_v1": Variant("trc", render_trc_v1, origin=BASE),
    "trc_v13": Variant("trc", render_trc_v13),
    "trc_v2": Variant("trc", render_trc_v2),
    "asc": Variant("asc", render_asc),
    "blf": Variant("blf", render_blf),
    "blf_raw": Variant("blf", lambda frames: render_blf(frames, compression_level=0)),
    "busmaster": Variant("busmaster", render_busmaster),
    "candump_console": Variant("candump_console", render_candump_console),
    "candump_console_date": Variant("candump_console", render_candump_console_date),
    "candump_console_bare": Variant("candump_console", render_candump_console_bare, timestamps=False),
    "labelled_candump": Variant("labelled_candump", render_labelled_candump, keeps_labels=True, timestamps=False),
    "j1939_csv": Variant("j1939_csv", render_j1939_csv, keeps_labels=True),
    "road": Variant("road", render_road, keeps_labels=True, timestamps=False, eight_bytes=True),
}
FORMAT_NAMES = [capture_format.name for capture_format in installed_formats()]
assert sorted({variant.format for variant in VARIANTS.values()}) == sorted(FORMAT_NAMES), "a format without a renderer"


def frames_from(steps) -> list[Frame]:
    """Frames from (microseconds since the previous frame, ID, data, label) steps."""
    frames, micros = [], 0
    for gap, can_id, data, label in steps:
        micros += gap
        frames.append((BASE + micros / 1e6, can_id, data, label))
    return frames


frame_steps = st.lists(
    st.tuples(st.integers(0, 3_000_000), st.one_of(st.integers(0, 0x7FF), st.integers(0x800, MAX_ID)), st.binary(max_size=8), st.integers(0, 1)),
    max_size=8,
)


# ============================================================================ mutations

HOSTILE = [
    b"", b"nan", b"NaN", b"inf", b"-inf", b"-1", b"-0.5", b"1e308", b"1e999", b"0x", b"ZZ", b"G1", b"9", b"15", b"64",
    b"4294967296", b"9" * 40, b"\x00", b"\xff\xfe", "é".encode(), b"#", b"##", b",", b";", b"(", b")", b"R", b"RTR",
    b"***", b":", b" ", b"\t", b"\r", b"1.2.3", b"00 00 00 00 00 00 00 00 00", b"123#", b"Rx", b"x", b"sr",
    b"***DEC***", b"***RELATIVE MODE***", b"***ABSOLUTE MODE***", b"CANFD", b"ErrorFrame", b"FFFFFFFF", b"Warng",
]
_TOKEN = re.compile(rb"[^\s,#():]+")
LONG_LINE = text.MAX_LINE_BYTES + 1000


def _choice(items, pick: Pick):
    return items[pick(len(items))]


def _split(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _join(lines: list[bytes]) -> bytes:
    return b"\n".join(lines)


def _tokens(line: bytes) -> list[re.Match]:
    return list(_TOKEN.finditer(line))


def _edit_token(data: bytes, pick: Pick, edit: Callable[[bytes], bytes], which=lambda token: True) -> bytes:
    """``edit`` one token (a run of bytes between separators) of a random line, among those ``which`` accepts."""
    lines = _split(data)
    row = pick(len(lines))
    tokens = [t for t in _tokens(lines[row]) if which(t.group())]
    if not tokens:
        return data
    token = _choice(tokens, pick)
    line = lines[row]
    lines[row] = line[: token.start()] + edit(token.group()) + line[token.end() :]
    return _join(lines)


def truncate(data: bytes, pick: Pick) -> bytes:
    return data[: pick(len(data) + 1)]


def cut_line(data: bytes, pick: Pick) -> bytes:
    lines = _split(data)
    row = pick(len(lines))
    lines[row] = lines[row][: pick(len(lines[row]) + 1)]
    return _join(lines)


def drop_line(data: bytes, pick: Pick) -> bytes:
    lines = _split(data)
    del lines[pick(len(lines))]
    return _join(lines)


def duplicate_line(data: bytes, pick: Pick) -> bytes:
    lines = _split(data)
    lines.insert(pick(len(lines) + 1), lines[pick(len(lines))])
    return _join(lines)


def swap_lines(data: bytes, pick: Pick) -> bytes:
    """Two rows swapped: timestamps out of order."""
    lines = _split(data)
    a, b = pick(len(lines)), pick(len(lines))
    lines[a], lines[b] = lines[b], lines[a]
    return _join(lines)


def replace_token(data: bytes, pick: Pick) -> bytes:
    return _edit_token(data, pick, lambda token: _choice(HOSTILE, pick))


def drop_token(data: bytes, pick: Pick) -> bytes:
    return _edit_token(data, pick, lambda token: b"")


def duplicate_token(data: bytes, pick: Pick) -> bytes:
    return _edit_token(data, pick, lambda token: token + _choice([b" ", b",", b""], pick) + token)


def bad_hex(data: bytes, pick: Pick) -> bytes:
    """A non-hex digit inside a hex-looking token (ID, data byte, payload)."""
    def edit(token: bytes) -> bytes:
        at = pick(len(token))
        return token[:at] + _choice([b"G", b"z", b"-", b".", b"\x00"], pick) + token[at + 1 :]

    return _edit_token(data, pick, edit, lambda token: bool(re.fullmatch(rb"[0-9A-Fa-f]+", token)))


def wrong_dlc(data: bytes, pick: Pick) -> bytes:
    """A one-digit token (a DLC, in most formats) changed: more or fewer bytes than the row has."""
    return _edit_token(data, pick, lambda token: _choice([b"0", b"1", b"7", b"8", b"9", b"15", b"64", b"-1", b"255"], pick), lambda token: len(token) == 1 and token.isdigit())


def bad_timestamp(data: bytes, pick: Pick) -> bytes:
    """A number with a point (a timestamp or time offset) made NaN, infinite, negative, huge or earlier."""
    values = [b"nan", b"inf", b"-inf", b"-12.5", b"1e308", b"1e400", b"0.0", b"1.000001", b"99999999999999999999.5", b"1.5e3"]
    return _edit_token(data, pick, lambda token: _choice(values, pick), lambda token: b"." in token)


def insert_bytes(data: bytes, pick: Pick) -> bytes:
    at = pick(len(data) + 1)
    return data[:at] + bytes(pick(256) for _ in range(1 + pick(8))) + data[at:]


def flip_byte(data: bytes, pick: Pick) -> bytes:
    if not data:
        return data
    at = pick(len(data))
    return data[:at] + bytes([data[at] ^ (1 << pick(8))]) + data[at + 1 :]


def overwrite_word(data: bytes, pick: Pick) -> bytes:
    """Four bytes (a size or count field, in a binary file) set to an extreme."""
    at = pick(len(data) + 1)
    return data[:at] + _choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\xff\xff\xff\x7f", b"\x10\x00\x00\x00"], pick) + data[at + 4 :]


def bom(data: bytes, pick: Pick) -> bytes:
    return b"\xef\xbb\xbf" + data


def crlf(data: bytes, pick: Pick) -> bytes:
    return data.replace(b"\n", b"\r\n")


def lone_cr(data: bytes, pick: Pick) -> bytes:
    return data.replace(b"\n", b"\r")


def long_line(data: bytes, pick: Pick) -> bytes:
    """A line just short of the longest the readers parse, or just past it."""
    lines = _split(data)
    piece = _choice([b"1 ", b"00,", b"#", b"x"], pick)
    length = _choice([text.MAX_LINE_BYTES - 100, LONG_LINE], pick)
    lines.insert(pick(len(lines) + 1), (piece * (length // len(piece) + 1))[:length])
    return _join(lines)


def blank_lines(data: bytes, pick: Pick) -> bytes:
    lines = _split(data)
    lines.insert(pick(len(lines) + 1), _choice([b"", b"   ", b"\t", b"\r"], pick))
    return _join(lines)


def empty(data: bytes, pick: Pick) -> bytes:
    return b""


MUTATIONS: dict[str, Callable[[bytes, Pick], bytes]] = {
    f.__name__: f
    for f in (
        truncate, cut_line, drop_line, duplicate_line, swap_lines, replace_token, drop_token, duplicate_token, bad_hex,
        wrong_dlc, bad_timestamp, insert_bytes, flip_byte, overwrite_word, bom, crlf, lone_cr, long_line, blank_lines, empty,
    )
}


def mutate(data: bytes, pick: Pick, count: int) -> tuple[bytes, list[str]]:
    """``count`` random mutations applied one after the other; the data and their names."""
    names = []
    for _ in range(count):
        name = _choice(list(MUTATIONS), pick)
        data = MUTATIONS[name](data, pick)
        names.append(name)
    return data, names


# ============================================================================ the property


def check_table(table: FrameTable) -> None:
    """Columns a consumer can rely on, whatever the input was."""
    n = len(table)
    for column in (table.timestamp, table.can_id, table.dlc, table.label, table.attack_type, table.extended, table.remote):
        assert column.shape == (n,)
    assert table.timestamps or np.array_equal(table.timestamp, np.arange(n)), "positions that are not 0, 1, 2, ..."
    assert not table.payload[table.remote].any(), "a remote frame with data"
    assert table.error_frames >= 0
    assert table.payload.shape == (n, 8) and table.payload.dtype == np.uint8
    assert np.isfinite(table.timestamp).all(), "a timestamp that is not finite"
    assert (table.dlc <= 8).all(), "a DLC above 8"
    assert (table.can_id <= MAX_ID).all(), "a CAN ID of more than 29 bits"
    assert not table.payload[np.arange(8)[None, :] >= table.dlc[:, None]].any(), "payload bytes past the DLC"
    assert np.isin(table.label, (0, 1)).all()
    assert (table.attack_type < len(table.attack_names)).all()
    assert np.array_equal(table.label == 1, table.attack_type > 0)
    assert table.bad_rows >= 0


def check_error(error: KdcoreError, *paths: Path) -> None:
    """One line naming the file; a bad row as ``file:line: field: reason`` with a line from 1."""
    message = str(error)
    assert len(message.splitlines()) == 1 and message.strip() == message, f"not one line: {message!r}"
    assert any(str(path) in message for path in paths), f"names no file: {message!r}"
    if isinstance(error, BadRowError):
        assert any(re.match(rf"{re.escape(str(path))}:[1-9]\d*: [\w$ ]+: ", message) for path in paths), f"not file:line: field: {message!r}"


@contextlib.contextmanager
def no_hang(seconds: int = NO_HANG_S):
    """Fail (instead of waiting forever) when the block runs longer than ``seconds``."""
    def timed_out(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, timed_out)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def outcome(read) -> FrameTable | KdcoreError:
    """What a read gives: the table or the ``KdcoreError`` (anything else propagates: a bug)."""
    try:
        with no_hang():
            return read()
    except KdcoreError as error:
        return error


def check_capture(path: Path, format: str | None = None) -> FrameTable | KdcoreError:
    """The property, in both modes; returns the ``error``-mode outcome.

    ``error`` mode: a consistent table without bad rows, or a one-line error. ``skip`` mode: the
    same table when there was no bad row; after a bad row, a table counting the skipped rows,
    whose first skipped message is the one ``error`` mode raised (or, for a problem with the
    whole file, the same error).
    """
    strict = outcome(lambda: read_capture(path, format))
    lenient = outcome(lambda: read_capture(path, format, "skip"))
    if isinstance(strict, FrameTable):
        check_table(strict)
        assert strict.bad_rows == 0
        assert isinstance(lenient, FrameTable), f"skip mode raised what error mode read: {lenient}"
        assert lenient.bad_rows == 0 and same_frames(lenient, strict)
        return strict
    check_error(strict, path, sidecar_path(path))
    if isinstance(lenient, FrameTable):
        check_table(lenient)
        assert isinstance(strict, BadRowError), f"skip mode read a file error mode refused as a whole: {strict}"
        assert lenient.bad_rows >= 1, "rows were skipped but not counted"
        if format is not None:  # the reader's own record of what it skipped
            errors = RowErrors(path, "skip")
            with no_hang():
                format_by_name(format).read(path, errors)
            assert errors.skipped == lenient.bad_rows
            assert errors.first == str(strict), f"skip mode's first bad row {errors.first!r} is not error mode's {str(strict)!r}"
    else:
        assert str(lenient) == str(strict), "skip mode failed differently"
    return strict


def same_frames(a: FrameTable, b: FrameTable) -> bool:
    columns = ("timestamp", "can_id", "dlc", "payload", "label", "attack_type", "extended", "remote")
    return all(np.array_equal(getattr(a, name), getattr(b, name)) for name in columns) and a.timestamps == b.timestamps


def drawn_pick(data) -> Pick:
    return lambda n: data.draw(st.integers(0, n - 1)) if n > 1 else 0


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# ============================================================================ tests


@pytest.mark.parametrize("variant", VARIANTS)
@ROUND_TRIP
@given(steps=frame_steps)
def test_valid_captures_read_back_their_frames(folder, variant, steps):
    """The renderers write real captures (else the mutations below would test little)."""
    name, render, keeps_labels, origin, timestamps, eight_bytes = VARIANTS[variant]
    frames = frames_from(steps)
    path = folder / f"valid-{variant}"
    path.write_bytes(render(frames))
    table = read_capture(path, name)
    assert [int(i) for i in table.can_id] == [i for _, i, _, _ in frames]
    remote = table.remote.tolist()
    payloads = [table.payload[k, : table.dlc[k]].tobytes() for k in range(len(table))]
    expected = [d.ljust(8, b"\0") if eight_bytes else bytes(len(d)) if r else d for (_, _, d, _), r in zip(frames, remote)]
    assert payloads == expected
    assert table.timestamps == timestamps or not frames  # (an empty console capture cannot say)
    times = [t - origin for t, _, _, _ in frames] if timestamps else list(range(len(frames)))
    np.testing.assert_allclose(table.timestamp, times, rtol=0, atol=5e-6)
    assert table.label.tolist() == [label if keeps_labels else 0 for _, _, _, label in frames]
    assert table.extended.tolist() == [i > 0x7FF or name == "j1939_csv" for _, i, _, _ in frames]
    if frames:  # and detected by content (a capture without rows may be empty: nothing to detect)
        detected = check_capture(path)
        assert isinstance(detected, FrameTable) and same_frames(detected, table), detected


@pytest.mark.parametrize("variant", VARIANTS)
@FUZZ
@given(steps=frame_steps, data=st.data())
def test_mutated_captures_give_a_table_or_a_one_line_error(folder, variant, steps, data):
    name, render = VARIANTS[variant][:2]
    pick = drawn_pick(data)
    mutated, _ = mutate(render(frames_from(steps)), pick, 1 + pick(3))
    path = folder / f"mutated-{variant}"
    path.write_bytes(mutated)
    check_capture(path, name)
    check_capture(path)  # detected by content
    check_capture(path, _choice(FORMAT_NAMES, pick))  # and read as some other format


# starts that get random bytes past each format's sniffer and header checks
PREFIXES = [
    b"", b"LOGG", b"***BUSMASTER Ver 3.2.0***\n", b";$FILEVERSION=1.1\n;$STARTTIME=45448.0\n", b";$FILEVERSION=2.1\n;$COLUMNS=N,O,T,B,I,d,R,L,D\n",
    b";$FILEVERSION=1.3\n", b";PCAN trace\n", b"date Wed Jun 05 00:40:54.000 2024\nbase hex  timestamps absolute\n",
    b"timestamp,arbitration_id,data_field,attack\n", b"Timestamp: 1.0 ID: 0350 000 DLC: 8 ", b"1.0,0316,8,", b"(1.0) can0 ",
    b" (000.000000)  can0  18FCF200   [8]  ", b"timestamp,iface,can_id,dlc,data,label\n", b"852,32,10,0,0,0,2,116,128,", b"0 080#",
]


@FUZZ
@given(prefix=st.sampled_from(PREFIXES), body=st.binary(max_size=600))
def test_random_bytes_give_a_table_or_a_one_line_error(folder, prefix, body):
    path = folder / "random"
    path.write_bytes(prefix + body)
    check_capture(path)
    for name in FORMAT_NAMES:
        check_capture(path, name)


def render_sidecar(rows) -> bytes:
    """Interval rows (start and length in seconds after BASE, attack, CAN ID or None for all)."""
    return _lines(["start,end,attack,can_id", *(f"{BASE + a:.6f},{BASE + a + b:.6f},{attack},{'' if i is None else f'{i:X}'}" for a, b, attack, i in rows)])


def sidecar_rows(can_ids):
    interval = st.tuples(st.floats(0, 20), st.floats(0, 5), st.sampled_from(["dos", "fuzzy", "spoof"]), st.sampled_from([None, *can_ids]))
    return st.lists(interval, max_size=4)


@FUZZ
@given(steps=frame_steps, data=st.data())
def test_attack_sidecars_label_or_give_a_one_line_error(folder, steps, data):
    """A capture without labels plus a (mutated, or random) ``.attacks.csv`` next to it."""
    pick = drawn_pick(data)
    frames = frames_from(steps)
    rows = data.draw(sidecar_rows([i for _, i, _, _ in frames]))
    capture = folder / "labelled.log"
    capture.write_bytes(render_candump(frames))
    sidecar, mutations = render_sidecar(rows), []
    if pick(4) == 0:
        sidecar, mutations = data.draw(st.binary(max_size=300)), ["random"]
    else:
        sidecar, mutations = mutate(sidecar, pick, pick(3))
    sidecar_path(capture).write_bytes(sidecar)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an interval that covers no frame warns: not the point here
            result = check_capture(capture, "candump")
            check_capture(capture)
    finally:
        sidecar_path(capture).unlink()
    if not mutations:  # a valid sidecar labels exactly the frames inside its intervals
        assert isinstance(result, FrameTable), result
        bounds = [(float(f"{BASE + a:.6f}"), float(f"{BASE + a + b:.6f}"), i) for a, b, _, i in rows]
        inside = [any(lo <= t <= hi and i in (None, can_id) for lo, hi, i in bounds) for t, can_id in zip(result.timestamp, result.can_id)]
        assert result.label.tolist() == [int(flag) for flag in inside]


# ============================================================================ the timestamp policy (docs/formats.md)


@pytest.mark.parametrize("variant", ["ctt", "hcrl_ch", "hcrl_ch_txt", "candump", "trc", "trc_v1", "trc_v13", "trc_v2", "candump_console", "j1939_csv"])
@pytest.mark.parametrize("value", [b"nan", b"inf", b"-inf", b"1e999"])
def test_a_timestamp_that_is_not_finite_is_a_bad_row(folder, variant, value):
    name, render = VARIANTS[variant][:2]
    data = render(frames_from([(1_500_000, 0x100, b"\x01", 0), (1_000_000, 0x200, b"\x02", 0)]))
    header_lines = render([]).count(b"\n")
    path = folder / f"not-finite-{variant}"
    path.write_bytes(data.replace(b"1717548055.500000", value, 1).replace(b"1500.000", value, 1))
    strict = check_capture(path, name)
    assert isinstance(strict, BadRowError) and str(strict).startswith(f"{path}:{header_lines + 1}: "), strict
    table = read_capture(path, name, "skip")
    assert table.can_id.tolist() == [0x200] and table.bad_rows == 1


@pytest.mark.parametrize("variant", [v for v in VARIANTS if not v.startswith("blf") and VARIANTS[v].timestamps])
def test_timestamps_out_of_order_are_kept_in_file_order(folder, variant):
    """Not sorted, not an error: the table is the file, row by row."""
    name, render, _, origin = VARIANTS[variant][:4]
    times = [3.0, 1.0, 2.0, 2.0]
    path = folder / f"out-of-order-{variant}"
    path.write_bytes(render([(BASE + t, 0x100 + k, bytes([k]), 0) for k, t in enumerate(times)]))
    table = read_capture(path, name)
    assert table.can_id.tolist() == [0x100, 0x101, 0x102, 0x103] and table.bad_rows == 0
    np.testing.assert_allclose(table.timestamp, [BASE + t - origin for t in times], rtol=0, atol=5e-6)


# ============================================================================ bounded memory and time

HUGE_LINE_BYTES = 24 << 20


def traced_peak(read) -> tuple[FrameTable | KdcoreError, int]:
    """The outcome of ``read`` and the peak of memory allocated meanwhile (numpy's included)."""
    tracemalloc.start()
    try:
        result = outcome(read)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_huge_single_line_is_one_bad_row_in_bounded_memory(folder, variant):
    """Tens of MB without a newline after a valid header: a bad row, reported without tokenizing
    it (its tokens would cost many times its size), within a few times the file's size."""
    name, render = VARIANTS[variant][:2]
    path = folder / f"huge-{variant}"
    header = render([])
    path.write_bytes(header + b"1 " * (HUGE_LINE_BYTES // 2))
    size = path.stat().st_size
    strict, peak = traced_peak(lambda: read_capture(path, name))
    assert isinstance(strict, BadRowError), strict
    check_error(strict, path)
    assert peak < 4 * size, f"{peak / size:.1f} times the file's size"
    lenient, peak = traced_peak(lambda: read_capture(path, name, "skip"))
    assert isinstance(lenient, FrameTable) and len(lenient) == 0 and lenient.bad_rows == 1
    assert peak < 4 * size, f"{peak / size:.1f} times the file's size"
    detected = outcome(lambda: read_capture(path))
    assert isinstance(detected, KdcoreError)
    check_error(detected, path)


# variant → a bad row, and how many (fewer for python-can's readers: a Python exception per bad row)
TINY_LINES = {
    **{variant: (b"x\n", 600_000) for variant in (
        "ctt", "hcrl_ch", "hcrl_ch_txt", "candump", "trc", "busmaster", "candump_console", "labelled_candump", "j1939_csv", "road",
    )},
    "asc": (b"0.1 1 1 Rx d 1 zz\n", 40_000),  # python-can ignores lines that are no frame: this is a bad frame
    "trc_v2": (b"x\n", 40_000),
}


@pytest.mark.parametrize("variant", TINY_LINES)
def test_very_many_tiny_lines_in_bounded_memory(folder, variant, monkeypatch):
    """Every line a bad row: ``error`` mode stops at the first, ``skip`` mode counts them all
    (without a message each) — in memory bounded by the text, a few tens of bytes a line, and the
    working memory of one block (blocks made small here so that there are many)."""
    monkeypatch.setattr(text, "CHUNK_BYTES", 1 << 17)
    name, render = VARIANTS[variant][:2]
    line, lines = TINY_LINES[variant]
    header = render([])
    path = folder / f"tiny-{variant}"
    path.write_bytes(header + line * lines)
    size = path.stat().st_size
    bound = 2 * size + 64 * lines + 256 * (1 << 16)
    strict, peak = traced_peak(lambda: read_capture(path, name))
    first_row = header.count(b"\n") + 1
    assert isinstance(strict, BadRowError) and str(strict).startswith(f"{path}:{first_row}: row: "), strict
    assert peak < bound, f"{peak / lines:.0f} bytes a line"
    lenient, peak = traced_peak(lambda: read_capture(path, name, "skip"))
    assert isinstance(lenient, FrameTable) and len(lenient) == 0 and lenient.bad_rows == lines
    assert peak < bound, f"{peak / lines:.0f} bytes a line"


# ============================================================================ inputs that broke a reader


def _blf_container(payload: bytes, compress: bool = True) -> bytes:
    """One BLF log container object holding ``payload`` (zlib-compressed or not)."""
    method = ZLIB_DEFLATE if compress else NO_COMPRESSION
    body = LOG_CONTAINER_STRUCT.pack(method, len(payload)) + (zlib.compress(payload, 9) if compress else payload)
    size = OBJ_HEADER_BASE_STRUCT.size + len(body)
    return OBJ_HEADER_BASE_STRUCT.pack(b"LOBJ", 16, 1, size, LOG_CONTAINER) + body + b"\0" * (size % 4)


def _blf(*containers: bytes) -> bytes:
    return render_blf([])[:FILE_HEADER_SIZE] + b"".join(containers)


TRC_V2_HEADER = ";$FILEVERSION=2.1\n;$STARTTIME=45448.0\n;$COLUMNS=N,O,T,B,I,d,R,L,D\n"
TRC_V2_ROW = "      1         9.268 DT  1     046F Rx -  2    11 22\n"

# (name, format, file content, what error mode says) — each was a traceback, a hang, wrong data
# or unbounded memory before its fix (see docs/formats.md for the rules they follow now)
BROKE_A_READER = [
    ("trc-v2-row-before-columns", "trc", ";$FILEVERSION=2.1\n;$STARTTIME=45448.0\n" + TRC_V2_ROW + ";$COLUMNS=N,O,T,B,I,d,R,L,D\n" + TRC_V2_ROW,
     r":3: row: python-can could not parse it \(ValueError: File has no column information\)"),  # was AttributeError
    ("trc-v2-start-time-out-of-range", "trc", TRC_V2_HEADER.replace("45448.0", "4544279801") + TRC_V2_ROW,
     r":2: row: python-can could not parse it \(OverflowError: "),  # was OverflowError
    ("trc-v2-id-over-29-bits", "trc", TRC_V2_HEADER + TRC_V2_ROW.replace("046F", "FFFFFFFFFF"), r":4: row: CAN ID FFFFFFFFFF: more than 29 bits"),  # was OverflowError
    ("trc-v13-nan-offset", "trc", ";$FILEVERSION=1.3\n;$STARTTIME=45448.0\n      1)           nan 1  Rx      0001 -  1  00\n",
     r":3: row: timestamp not a finite number: nan"),  # was a NaN timestamp in the table
    ("trc-v1-remote-negative-dlc", "trc", ";PCAN trace\n     1)      1841  0001  -1  RTR\n", r":2: row: negative DLC -1"),  # was OverflowError
    ("trc-v1-short-row", "trc", ";PCAN trace\n     1)      1841  0001\n     2)      1842  0001  0\n",
     r":2: row: python-can could not parse it \(IndexError"),  # was dropped silently (and logged by python-can)
    ("trc-v11-start-time-overflows", "trc", ";$FILEVERSION=1.1\n;$STARTTIME=1e307\n     1)  1.0  Rx  0001  0\n",
     r":2: \$STARTTIME: not a finite number of days"),  # was infinite timestamps
    ("blf-header-shorter-than-its-header", "blf", render_blf([])[:4] + b"\x10\x00\x00\x00" + render_blf([])[8:],
     r": not a BLF file \(python-can could not read its header: ValueError"),  # was ValueError
    ("blf-zip-bomb", "blf", _blf(_blf_container(b"\0" * 64_000_000)), r":1: object: .*a container inflating to more than"),  # was 64 MB inflated at once
    ("blf-object-piling-up", "blf", _blf(_blf_container(OBJ_HEADER_BASE_STRUCT.pack(b"LOBJ", 16, 1, 0x7FFFFFFF, 1) + bytes(100_000)),
                                         *[_blf_container(bytes(range(256)) * 400) for _ in range(60)]),
     r":1: object: .*an object spanning more than"),  # was every container joined onto the last: quadratic
    ("blf-object-of-size-0", "blf", _blf(_blf_container(OBJ_HEADER_BASE_STRUCT.pack(b"LOBJ", 16, 1, 0, 1) + bytes(32), compress=False)),
     r":1: object: .*an object of size 0"),  # was an endless loop
    ("busmaster-start-fraction-of-5000-digits", "busmaster", "***BUSMASTER Ver 3.2.0***\n***START DATE AND TIME 5:6:2024 00:40:54:" + "9" * 5000 + "***\n",
     r":2: start date: expected dd:mm:yyyy hh:mm:ss:ms"),  # was ValueError (int digits limit)
]


@pytest.mark.parametrize(("name", "format", "content", "message"), BROKE_A_READER, ids=[case[0] for case in BROKE_A_READER])
def test_inputs_that_broke_a_reader(folder, name, format, content, message):
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with no_hang():
        result = check_capture(path, format)
    assert isinstance(result, KdcoreError) and re.search(message, str(result)), result


@pytest.mark.parametrize(
    ("sidecar", "message"),
    [
        (b"start,end,attack\n\xff\xfe,1,dos\n", r":2: row: not UTF-8 text"),  # was UnicodeDecodeError
        (b"start,end,attack\n1," + b"9" * 200_000 + b",dos\n", r":2: row: not a CSV row: field larger than field limit"),  # was _csv.Error
    ],
)
def test_sidecars_that_broke_the_reader(folder, sidecar, message):
    capture = folder / "sidecar.log"
    capture.write_bytes(render_candump(frames_from([(0, 0x100, b"\x01", 0)])))
    sidecar_path(capture).write_bytes(sidecar)
    try:
        result = check_capture(capture, "candump")
    finally:
        sidecar_path(capture).unlink()
    assert isinstance(result, BadRowError) and str(result).startswith(str(sidecar_path(capture))) and re.search(message, str(result)), result


def test_a_missing_capture_with_its_format_named(folder):
    with pytest.raises(KdcoreError, match="capture not found"):  # was FileNotFoundError
        read_capture(folder / "missing.log", "candump")
