"""Any delimited text capture, described by a layout: which column holds what.

A layout is written in TOML (``load_layout``) or built in Python (``Layout``) and read with
``LayoutFormat(layout)``, a capture format like any other::

    delimiter = ","          # one character, "\\t", or "whitespace" (runs of spaces and tabs)
    header = true            # the first row names the columns; then columns may be named
    skip_lines = 0           # lines to pass over before the header / first row
    comment = "#"            # optional: lines starting with it are no rows
    [timestamp]              # omit: the capture has no timestamps (frames keep their positions)
    column = "timestamp"     # a header name, or a 0-based index (negative: from the row's end)
    unit = "s"               # s, ms, us, ns
    [can_id]
    column = "can_id"
    base = 16                # 16 (a 0x prefix is accepted) or 10
    extended = true          # optional: every ID is 29-bit (J1939); default: IDs above 0x7FF are
    [dlc]                    # optional; default: the number of payload bytes
    column = "dlc"
    [payload]                # exactly one of:
    column = "data"          #   one hex string of the payload's bytes,
    # columns = [1, 2, 3]    #   one column per byte (bytes past the DLC are ignored), or
    # rest = 3               #   every column from index 3 on (rows of varying width, unquoted)
    base = 16                # of byte columns: 16 or 10
    [label]                  # optional: every frame normal without it
    column = "label"
    normal = ["normal"]      # values meaning normal
    attack = []              # optional: the values meaning an attack (then any other is a bad row)
    attack_names = "auto"    # "value": the label names the attack; "file": the capture's name does;
                             # "auto": the value, unless it is a number or one character

The built-in delimited formats (``ctt``, ``hcrl_ch``, ``j1939_csv``, ``road``) are layouts too.
A row of a layout with a one-character delimiter and no ``rest`` is parsed by pyarrow's CSV reader
(quotes honoured; every row must have the header's number of fields, or without a header the
number most of the first rows have); whitespace-separated and ``rest`` layouts are split by
``pyarrow.compute``. Bad rows name the field by its header name, else by the layout's key
(``timestamp``, ``can_id``, ``dlc``, ``data``, ``label``).
"""

from __future__ import annotations

import csv
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from kdcore.data.formats.base import TextFormat
from kdcore.data.formats.text import MAX_ID, Lines, Problems, byte_fields, csv_rows, split_lines, split_rows
from kdcore.data.frames import NORMAL, BadRowError, FrameTable, RowErrors
from kdcore.errors import KdcoreError, closest

UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}  # per second: a time is divided by it, so 10.48 ms is 0.01048 s
ATTACK_NAMES = ("value", "file", "auto")
WHITESPACE = "whitespace"
QUOTE = '"'
MAX_NAMES = 255  # attack types are a uint8 index, 0 being normal

Column = str | int  # a header name, or a 0-based index (negative: counted from the end of the row)


class LayoutError(KdcoreError):
    """A layout that cannot be read: names the file (when there is one), the key and the reason."""


def _check(ok: bool, key: str, reason: str) -> None:
    if not ok:
        raise LayoutError(f"{key}: {reason}")


def _column(key: str):
    def check(instance, attribute, value):
        _check(isinstance(value, (str, int)) and not isinstance(value, bool) and value != "", f"{key}.column", "expected a header name or a column index")

    return attrs.field(validator=check)


def _choice(key: str, choices):
    def check(instance, attribute, value):
        _check(any(value == c and type(value) is type(c) for c in choices), key, f"expected one of {', '.join(map(repr, choices))}, got {value!r}")

    return check


def _texts(key: str):
    def convert(value) -> tuple[str, ...]:
        _check(isinstance(value, (list, tuple)) and all(isinstance(v, str) and v and v.strip() == v for v in value), key, "expected a list of non-empty texts without surrounding spaces")
        return tuple(value)

    return convert


def _columns(value) -> tuple[Column, ...] | None:
    if value is None:
        return None
    ok = isinstance(value, (list, tuple)) and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value)
    _check(ok and len(value) <= 8, "payload.columns", "expected a list of at most 8 header names or column indexes")
    return tuple(value)


@attrs.frozen
class Timestamp:
    column: Column = _column("timestamp")
    unit: str = attrs.field(default="s", validator=_choice("timestamp.unit", tuple(UNITS)))


@attrs.frozen
class CanId:
    column: Column = _column("can_id")
    base: int = attrs.field(default=16, validator=_choice("can_id.base", (16, 10)))
    extended: bool | None = attrs.field(default=None, validator=attrs.validators.optional(lambda i, a, v: _check(isinstance(v, bool), "can_id.extended", "expected true or false")))  # every ID 29-bit, 11-bit, or by value (None: above 0x7FF)


@attrs.frozen
class Dlc:
    column: Column = _column("dlc")


@attrs.frozen
class Payload:
    column: Column | None = None
    columns: tuple[Column, ...] | None = attrs.field(default=None, converter=_columns)
    rest: int | None = None
    base: int = attrs.field(default=16, validator=_choice("payload.base", (16, 10)))

    def __attrs_post_init__(self):
        given = [key for key in ("column", "columns", "rest") if getattr(self, key) is not None]
        _check(len(given) == 1, "payload", f"expected exactly one of column, columns, rest; got {', '.join(given) or 'none'}")
        if self.column is not None:
            Dlc(self.column)  # the same check as any column
        if self.rest is not None:
            _check(isinstance(self.rest, int) and not isinstance(self.rest, bool) and self.rest >= 0, "payload.rest", "expected a column index")


@attrs.frozen
class Label:
    column: Column = _column("label")
    normal: tuple[str, ...] = attrs.field(default=(NORMAL,), converter=_texts("label.normal"))
    attack: tuple[str, ...] = attrs.field(default=(), converter=_texts("label.attack"))
    attack_names: str = attrs.field(default="auto", validator=_choice("label.attack_names", ATTACK_NAMES))

    def __attrs_post_init__(self):
        _check(bool(self.normal), "label.normal", "expected at least one value meaning normal")
        both = set(self.normal) & set(self.attack)
        _check(not both, "label.attack", f"{', '.join(sorted(both))} cannot mean both normal and attack")


@attrs.frozen
class Layout:
    """Where the fields of a frame are in the rows of a delimited text capture (see the module)."""

    can_id: CanId
    payload: Payload
    delimiter: str = ","
    header: bool = False
    skip_lines: int = 0
    comment: str | None = None
    timestamp: Timestamp | None = None
    dlc: Dlc | None = None
    label: Label | None = None

    def __attrs_post_init__(self):
        _check(self.delimiter == WHITESPACE or (len(self.delimiter) == 1 and self.delimiter not in f"\r\n{QUOTE}"), "delimiter", f"expected one character (not a line end or {QUOTE}) or {WHITESPACE!r}, got {self.delimiter!r}")
        _check(isinstance(self.header, bool), "header", "expected true or false")
        _check(isinstance(self.skip_lines, int) and not isinstance(self.skip_lines, bool) and self.skip_lines >= 0, "skip_lines", "expected a number of lines")
        _check(self.comment is None or (isinstance(self.comment, str) and len(self.comment) == 1 and self.comment != self.delimiter), "comment", "expected one character, not the delimiter")
        for key, column in self.columns():
            _check(self.header or isinstance(column, int), key, f"the column {column!r} is named, but the layout has no header (header = true)")

    def columns(self) -> list[tuple[str, Column]]:
        """(key, column) of every column the layout reads."""
        found = [("timestamp.column", self.timestamp.column)] if self.timestamp else []
        found.append(("can_id.column", self.can_id.column))
        if self.dlc:
            found.append(("dlc.column", self.dlc.column))
        if self.payload.column is not None:
            found.append(("payload.column", self.payload.column))
        found += [("payload.columns", column) for column in self.payload.columns or ()]
        if self.label:
            found.append(("label.column", self.label.column))
        return found

    def to_dict(self) -> dict[str, Any]:
        """The layout as plain data (JSON-able): its identity, e.g. in cache keys."""
        return attrs.asdict(self, value_serializer=lambda instance, field, value: list(value) if isinstance(value, tuple) else value)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Layout:
        """A layout from parsed TOML (or ``to_dict``); an unknown or mistyped key raises
        ``LayoutError`` naming it."""
        sections = {"timestamp": Timestamp, "can_id": CanId, "dlc": Dlc, "payload": Payload, "label": Label}
        known = [field.name for field in attrs.fields(cls)]
        values = {}
        for key, value in data.items():
            _known(key, known, "")
            if key in sections and value is None:  # (absent, as ``to_dict`` writes it)
                continue
            if key in sections:
                _check(isinstance(value, dict), key, "expected a table ([" + key + "])")
                fields = [field.name for field in attrs.fields(sections[key])]
                for inner in value:
                    _known(inner, fields, key + ".")
                _check("column" in value or key == "payload", key, "expected a column")
                values[key] = sections[key](**value)
            else:
                values[key] = value
        for key in ("can_id", "payload"):
            _check(key in values, key, f"missing: every layout needs [{key}]")
        return cls(**values)


def _known(key: str, known: list[str], prefix: str) -> None:
    if key not in known:
        guess = closest(key, known)
        raise LayoutError(f"{prefix}{key}: unknown key" + (f"; did you mean {prefix + guess!r}?" if guess else f" (known: {', '.join(known)})"))


def load_layout(path: str | Path) -> Layout:
    """A ``Layout`` from a TOML file; any mistake raises a one-line ``LayoutError`` naming the file and key."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LayoutError(f"{path}: layout file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LayoutError(f"{path}: not a TOML file: {exc}") from None
    try:
        return Layout.from_dict(data)
    except LayoutError as exc:
        raise LayoutError(f"{path}: {exc}") from None


# ============================================================================ reading


@attrs.frozen
class _Plan:
    """What a layout means for one file: the header resolved into column indexes."""

    columns: dict[str, Any]  # key → index (payload: an index, a tuple of indexes, or rest's start)
    names: dict[str, str]  # key → the name bad rows give the field
    width: int | None  # the fields every row has; None: rows of varying width (payload.rest)
    last_ignored: int  # lines up to this one (skipped lines, the header) are no rows
    attack: str  # the attack a label names when the file does


class LayoutFormat(TextFormat):
    """A capture read by a ``Layout``: ``read_capture(path, format=LayoutFormat(layout))``."""

    name = "layout"
    description = "a delimited text capture described by a layout file"

    def __init__(self, layout: Layout):
        self.layout = layout
        self.carries_labels = layout.label is not None

    def __eq__(self, other) -> bool:  # the same layout reads the same way (caches key on the format)
        return type(other) is type(self) and other.layout == self.layout

    def __hash__(self) -> int:
        return hash((type(self), self.layout))

    def sniff(self, head: bytes, path: Path) -> bool:
        return False  # a layout is given, never guessed

    def attack_name(self, path: Path) -> str:
        """The attack a capture holds, by its name: the folder ``test_NN_<attack>`` (the
        can-train-and-test collection), else the file name up to its first ``-``, lowercased."""
        match = re.fullmatch(r"test_\d+_(.+)", path.parent.name)
        if match:
            return match.group(1)
        return path.stem.lower().split("-")[0] or "attack"

    def settings(self, path: Path, head: bytes) -> _Plan:
        layout = self.layout
        lines = split_lines(head)
        if len(lines) and not head.endswith((b"\n", b"\r")):
            lines = lines.piece(0, len(lines) - 1)  # the head may end inside a line
        lines = lines.piece(min(layout.skip_lines, len(lines)), len(lines))
        rows = [
            (number, text)
            for number, text in ((int(lines.number[k]), lines.data[lines.start[k] : lines.end[k]]) for k in range(len(lines)))
            if text.strip() and not (layout.comment and text.startswith(layout.comment.encode()))
        ]
        header_line, header = (rows[0][0], self._fields(rows[0][1])) if layout.header and rows else (layout.skip_lines, None)
        if layout.header and header is None:
            raise BadRowError(f"{path}:{layout.skip_lines + 1}: header: expected a header line naming the columns {self._wanted()}")
        widths = [len(self._fields(text)) for _, text in rows[1 if header else 0 : 21]]
        needed = max(column + 1 if column >= 0 else -column for _, column in layout.columns() if isinstance(column, int)) if not header else 1
        width = len(header) if header else max(Counter(widths).most_common(1)[0][0] if widths else 1, needed)
        columns, names = {}, {}
        for key, column in layout.columns():
            field = key.split(".")[0]
            index = self._index(column, header, path, header_line)
            columns[field] = (*columns.get(field, ()), index) if key == "payload.columns" else index
            names[field] = header[index] if header and isinstance(column, str) else "data" if field == "payload" else field
        if layout.payload.rest is not None:
            columns["payload"], names["payload"] = layout.payload.rest, "data"
        return _Plan(columns, names, None if layout.payload.rest is not None else width, header_line, self.attack_name(path))

    def _fields(self, text: bytes) -> list[str]:
        line = text.decode(errors="replace")
        if self.layout.delimiter == WHITESPACE:
            return line.split()
        return [field.strip() for field in next(csv.reader([line], delimiter=self.layout.delimiter, quotechar=QUOTE), [])]

    def _wanted(self) -> str:
        return ", ".join(str(column) for _, column in self.layout.columns())

    def _index(self, column: Column, header: list[str] | None, path: Path, line: int) -> int:
        if isinstance(column, int):
            return column
        names = [name.lower() for name in header]
        if column.lower() not in names:
            shown = text if len(text := ", ".join(header)) <= 80 else text[:77] + "..."
            raise BadRowError(f"{path}:{line}: header: no column {column!r} (expected {self._wanted()}; the header names {shown!r})")
        return names.index(column.lower())

    def parse(self, lines: Lines, plan: _Plan, errors: RowErrors) -> FrameTable:
        layout = self.layout
        ignore = lines.number <= plan.last_ignored
        if layout.comment is not None:
            ignore |= lines.first_bytes() == ord(layout.comment)
        if plan.width is not None and layout.delimiter != WHITESPACE:
            label = {plan.columns["label"] % plan.width} if layout.label else set()
            indexes = {index % plan.width for key, index in plan.columns.items() for index in (index if isinstance(index, tuple) else (index,))}
            rows, bad = csv_rows(lines, plan.width, sorted(indexes - label), layout.delimiter, QUOTE, ignore, tuple(label))
            problems = Problems(rows, bad)
        else:
            rows = split_rows(lines, None if layout.delimiter == WHITESPACE else layout.delimiter)
            rows = rows.take(~ignore[rows.index])
            problems = Problems(rows)
            if plan.width is not None:
                problems.require(rows.count == plan.width, "row", f"expected {plan.width} fields")
            else:
                needed = _fields_needed(plan.columns)
                problems.require(rows.count >= needed, "row", f"expected at least {needed} fields")
        columns, names = plan.columns, plan.names
        n = len(rows)

        timestamp = None
        if layout.timestamp:
            field = rows.field(columns["timestamp"])
            timestamp, ok = field.floats()
            problems.require(ok, names["timestamp"], "not a finite number", field)
            timestamp = timestamp / UNITS[layout.timestamp.unit]

        field = rows.field(columns["can_id"])
        hex_ids = layout.can_id.base == 16
        can_id, ok = field.uint(layout.can_id.base, 8 if hex_ids else 10)
        problems.require(ok, names["can_id"], f"not a {'hex' if hex_ids else 'decimal'} CAN ID", field)
        problems.require(can_id <= MAX_ID, names["can_id"], "more than 29 bits", field)

        dlc = None
        if layout.dlc:
            field = rows.field(columns["dlc"])
            dlc, ok = field.uint(10, 2, prefix=False)
            problems.require(ok & (dlc <= 8), names["dlc"], "expected a DLC of 0-8", field)
            dlc = np.where(ok & (dlc <= 8), dlc, 0)

        payload, dlc = self._payload(rows, plan, problems, dlc)
        label, attack_type, attack_names = self._labels(rows, plan, problems, errors.path) if layout.label else (None, None, (NORMAL,))

        valid = problems.report(errors)
        extended = None if layout.can_id.extended is None else np.full(n, layout.can_id.extended)
        table = FrameTable.from_frames(timestamp, can_id, dlc, payload, label, attack_type, attack_names, extended=extended)
        return table if valid.all() else table.take(valid).with_positions() if timestamp is None else table.take(valid)

    def _payload(self, rows, plan: _Plan, problems: Problems, dlc: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        layout, at, name = self.layout, plan.columns["payload"], plan.names["payload"]
        if layout.payload.column is not None:
            field = rows.field(at)
            payload, length, ok = field.payload()
            problems.require(ok, name, "not a hex payload of 0-8 bytes", field)
            if dlc is None:
                return payload, length
            problems.require(~ok | (length == dlc), name, "the number of bytes does not match the DLC", field)
            return payload, dlc
        n = len(rows)
        if layout.payload.rest is not None:
            after = sum(1 for key, index in plan.columns.items() if key != "payload" and index < 0)  # fields counted from the end
            present = rows.count - at - after
            if dlc is None:
                problems.require((present >= 0) & (present <= 8), "row", "expected 0-8 data bytes")
                dlc = np.clip(present, 0, 8)
            else:
                problems.require(present == dlc, "row", "the number of data bytes does not match the DLC")
            indexes = [at + k for k in range(8)]
        else:
            indexes = list(at)
            dlc = np.full(n, len(indexes)) if dlc is None else dlc
        return byte_fields(rows, indexes, dlc, layout.payload.base, problems, name), dlc

    def _labels(self, rows, plan: _Plan, problems: Problems, path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        """Label and attack type of every row, decided once per distinct label value (a few)."""
        label_spec, name = self.layout.label, plan.names["label"]
        values, index = rows.categories(plan.columns["label"])
        values = [value.decode(errors="replace").strip() for value in values]
        names = [NORMAL, plan.attack] if label_spec.attack_names == "file" else [NORMAL]  # the same in every chunk
        kinds = np.zeros(len(values), dtype=np.int64)  # per distinct value: 0 normal, -1 bad, k: attack k
        for i, value in enumerate(values):
            if value in label_spec.normal:
                continue
            if not value or value == NORMAL or (label_spec.attack and value not in label_spec.attack):
                kinds[i] = -1
                continue
            numeric = value.replace(".", "", 1).isdigit() or len(value) == 1
            attack = plan.attack if label_spec.attack_names == "file" or (label_spec.attack_names == "auto" and numeric) else value
            if attack not in names:
                if len(names) > MAX_NAMES:
                    raise KdcoreError(f"{path}: more than {MAX_NAMES} attack names in the {name} column")
                names.append(attack)
            kinds[i] = names.index(attack)
        kind = kinds[index] if len(values) else np.zeros(len(index), dtype=np.int64)
        expected = " or ".join([*label_spec.normal, *label_spec.attack]) if label_spec.attack else None
        reason = f"expected {expected}" if expected else f"expected {' or '.join(label_spec.normal)} or the name of an attack"
        problems.require(kind >= 0, name, reason, lambda i: values[index[i]])
        attack_type = np.maximum(kind, 0).astype(np.uint8)
        return (attack_type > 0).astype(np.uint8), attack_type, tuple(names)


def _fields_needed(columns: dict[str, Any]) -> int:
    """The fields a row of varying width needs at least: up to the last column counted from the
    start (``rest`` included), plus those counted from the end."""
    indexes = [index for key, index in columns.items() if key != "payload"]
    return max([index + 1 for index in indexes if index >= 0] + [columns["payload"]]) + sum(1 for index in indexes if index < 0)
