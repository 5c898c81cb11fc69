"""Realistic synthetic CAN captures: a seeded vehicle, attack-free traffic, and attack injection.

A *vehicle* (``TrafficProfile``) is a fixed set of ECUs, each sending periodic CAN IDs with their
own period, jitter, clock drift, DLC and payload layout. Its payload bytes are of five kinds, as
in real buses: constants, rolling counters, checksums, slowly varying physical signals (speed,
RPM, throttle, steering, temperature: one shared vehicle state, so the same quantity moves in
step across IDs) and rare event bytes (a switch toggling). One seed gives one vehicle; a
``capture`` index gives different recordings of it, so attack-free training data and attacked
test data come from the same car.

``inject`` adds the Car-Hacking attacks (DoS, fuzzing, spoofing) and two more (replay,
suspension) to any ``FrameTable``, synthetic or real; ``write_ctt_dataset`` writes a complete
can-train-and-test folder; ``inject_capture`` is what ``kdcore data inject`` calls.

Everything is whole-array numpy: the only Python loops run over IDs and payload fields, never
over frames. See ``docs/synthetic.md`` for the model, the attack parameters and measured speed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs
import numpy as np

from kdcore.data.frames import FrameTable
from kdcore.errors import KdcoreError, unknown_name_message

ATTACKS = ("dos", "fuzzy", "spoof", "replay", "suspend")

# Published Car-Hacking dataset parameters (HCRL): DoS floods ID 0x000 every 0.3 ms, fuzzing sends
# a random ID and payload every 0.5 ms, spoofing sends one RPM/gear ID every 1 ms.
ATTACK_PERIOD = {"dos": 0.0003, "fuzzy": 0.0005, "spoof": 0.001}
DOS_ID = 0x000
INJECTION_JITTER = 0.02  # attacker timing jitter, as a share of its period (std, clipped to ±3σ)

CHANNELS = ("speed", "rpm", "throttle", "steering", "temperature")
SLOW_CHANNELS = ("speed", "temperature")  # what IDs slower than 100 ms carry
BYTE_KINDS = ("const", "counter", "checksum", "signal", "event")

# Periods seen in the real captures (camaro, civic8th, mazda3, yaris09) and how often, roughly.
PERIODS = np.array([0.010, 0.0125, 0.015, 0.020, 0.025, 0.030, 0.040, 0.050, 0.100, 0.200, 0.250, 0.300, 0.500, 1.000])
PERIOD_WEIGHTS = np.array([14, 5, 2, 10, 5, 3, 3, 10, 20, 3, 4, 3, 6, 12], dtype=float)
DLC_CHOICES = np.arange(1, 9)
DLC_WEIGHTS = np.array([2, 5, 5, 5, 5, 6, 8, 64], dtype=float)  # ~60–70 % of frames carry 8 bytes
SIGNAL_GRID = 0.01  # seconds between samples of the vehicle state, interpolated at frame times


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *stream]))


@attrs.frozen
class Field:
    """One payload field of an ID.

    - ``const``: byte ``position`` is always ``value``.
    - ``counter``: ``bits`` wide (2, 4 or 8) at bit ``shift`` of byte ``position``, incremented per
      message modulo 2**bits; the other bits of the byte hold ``value``.
    - ``checksum``: byte ``position`` = ``method`` of the ID's other DLC bytes: ``sum`` mod 256,
      ``id_sum`` (that sum plus the ID's high and low bytes) or ``xor``.
    - ``signal``: ``width`` bytes (1 or 2, big-endian) from ``position``, the vehicle state
      ``channel`` (0..1) scaled into ``low``..``high`` raw units plus ``noise`` raw units of noise.
    - ``event``: byte ``position`` is ``value``, switching to ``alt`` and back at rare random
      moments (``rate`` switches per second).
    """

    kind: str
    position: int
    width: int = 1
    value: int = 0
    bits: int = 0
    shift: int = 0
    method: str = ""
    channel: str = ""
    low: float = 0.0
    high: float = 0.0
    noise: float = 0.0
    alt: int = 0
    rate: float = 0.0

    def __attrs_post_init__(self):
        if self.kind not in BYTE_KINDS:
            raise ValueError(f"unknown field kind {self.kind!r}")


@attrs.frozen
class IdSchedule:
    """One periodic CAN ID: who sends it, how often, how regularly, and its payload layout."""

    can_id: int
    ecu: int
    period: float  # nominal seconds between messages
    jitter: float  # std of each message's deviation from its slot, seconds
    drift: float  # the sending ECU's clock error (relative, e.g. 2e-4 = 200 ppm)
    dlc: int
    fields: tuple[Field, ...] = attrs.field(converter=tuple)

    def field(self, kind: str) -> list[Field]:
        return [f for f in self.fields if f.kind == kind]


@attrs.frozen
class TrafficProfile:
    """A synthetic vehicle: its IDs' schedules and the bus bit rate. Same seed → same vehicle."""

    ids: tuple[IdSchedule, ...] = attrs.field(converter=tuple)
    bitrate: int = 500_000
    seed: int = 0

    @property
    def can_ids(self) -> np.ndarray:
        return np.array([s.can_id for s in self.ids], dtype=np.uint32)

    @property
    def num_ecus(self) -> int:
        return len({s.ecu for s in self.ids})

    @property
    def frame_rate(self) -> float:
        """Nominal frames per second on the bus."""
        return float(sum(1.0 / (s.period * (1 + s.drift)) for s in self.ids))

    def schedule(self, can_id: int) -> IdSchedule:
        for s in self.ids:
            if s.can_id == can_id:
                return s
        raise KdcoreError(f"CAN ID 0x{can_id:03X} is not sent by this vehicle")

    def signal_ids(self, channels: Sequence[str] = ("rpm", "speed")) -> list[int]:
        """IDs carrying one of ``channels``, fastest first: the natural spoofing targets."""
        found = [s for s in self.ids if any(f.channel in channels for f in s.field("signal"))]
        return [s.can_id for s in sorted(found, key=lambda s: (s.period, s.can_id))]

    @classmethod
    def random(
        cls,
        seed: int,
        num_ecus: int | None = None,
        num_ids: int | None = None,
        frame_rate: float | None = None,
        bitrate: int = 500_000,
    ) -> TrafficProfile:
        """A random vehicle shaped like the real captures (see ``docs/synthetic.md``).

        ``num_ids`` (default 40–70) IDs spread over ``num_ecus`` (default 5–12) ECUs; periods are
        drawn from the real ones, then nudged until the nominal bus rate is ``frame_rate``
        (default 1.6–2.4 k frames/s) within one step.
        """
        rng = _rng(seed, 0)
        num_ids = int(rng.integers(40, 71)) if num_ids is None else int(num_ids)
        num_ecus = int(rng.integers(5, 13)) if num_ecus is None else int(num_ecus)
        if num_ids < 1 or num_ecus < 1:
            raise KdcoreError(f"a vehicle needs at least one ID and one ECU, got {num_ids} IDs, {num_ecus} ECUs")
        if num_ids > 0x7E0:
            raise KdcoreError(f"at most {0x7E0} standard IDs fit, got num_ids={num_ids}")
        num_ecus = min(num_ecus, num_ids)
        target = float(rng.uniform(1600, 2400)) if frame_rate is None else float(frame_rate)

        period_index = rng.choice(len(PERIODS), num_ids, p=PERIOD_WEIGHTS / PERIOD_WEIGHTS.sum())
        period_index = _tune_rate(period_index, target, rng)
        periods = PERIODS[period_index]
        # Faster messages tend to get higher priority (lower IDs), loosely, as on real buses.
        can_ids = np.sort(rng.choice(np.arange(0x010, 0x7F0), num_ids, replace=False))
        order = np.argsort(np.log(periods) + rng.normal(0, 0.6, num_ids), kind="stable")
        id_of = np.empty(num_ids, dtype=np.int64)
        id_of[order] = can_ids

        ecu = np.concatenate([np.arange(num_ecus), rng.integers(0, num_ecus, num_ids - num_ecus)])
        rng.shuffle(ecu)
        ecu_drift = rng.uniform(-4e-4, 4e-4, num_ecus)  # up to ±400 ppm, like 1000.4 ms periods
        ecu_jitter = rng.lognormal(np.log(1.5e-4), 0.5, num_ecus)  # median ~0.15–0.25 ms

        schedules = []
        for i in range(num_ids):
            period = float(periods[i])
            jitter = float(ecu_jitter[ecu[i]] * rng.lognormal(0, 0.3))
            if rng.random() < 0.08:  # a few event-driven / busy-task IDs with ms-scale jitter
                jitter = float(rng.uniform(1e-3, 8e-3))
            jitter = min(jitter, 0.12 * period)
            dlc = int(rng.choice(DLC_CHOICES, p=DLC_WEIGHTS / DLC_WEIGHTS.sum()))
            schedules.append(
                IdSchedule(
                    can_id=int(id_of[i]),
                    ecu=int(ecu[i]),
                    period=period,
                    jitter=jitter,
                    drift=float(ecu_drift[ecu[i]]),
                    dlc=dlc,
                    fields=_random_fields(rng, dlc, period),
                )
            )
        schedules.sort(key=lambda s: s.can_id)
        return cls(tuple(schedules), bitrate, int(seed))

    def generate(self, seconds: float, seed: int | None = None, capture: int = 0, start: float = 0.0) -> FrameTable:
        """One attack-free recording of ``seconds`` from this vehicle (``seed`` defaults to the
        profile's; ``capture`` picks a different recording of the same vehicle)."""
        seconds = float(seconds)
        if not seconds > 0:
            raise KdcoreError(f"seconds must be positive, got {seconds}")
        rng = _rng(self.seed if seed is None else seed, 1, int(capture))
        state = _vehicle_state(seconds, rng)

        times, ids, dlcs, payloads = [], [], [], []
        for schedule in self.ids:
            t = _schedule_times(schedule, seconds, rng)
            times.append(t)
            ids.append(np.full(len(t), schedule.can_id, np.uint32))
            dlcs.append(np.full(len(t), schedule.dlc, np.uint8))
            payloads.append(_payload(schedule, t, state, rng))
        timestamp = np.concatenate(times)
        order = np.argsort(timestamp, kind="stable")
        timestamp, can_id, dlc = timestamp[order], np.concatenate(ids)[order], np.concatenate(dlcs)[order]
        payload = np.concatenate(payloads)[order]
        if self.bitrate:
            timestamp = _serialise(timestamp, dlc, self.bitrate)
        keep = timestamp < seconds
        timestamp = np.round(timestamp[keep] + start, 6)  # microseconds, as candump records them
        return FrameTable.from_frames(timestamp, can_id[keep], dlc[keep], payload[keep])


def generate_traffic(
    seconds: float,
    seed: int,
    num_ecus: int | None = None,
    *,
    num_ids: int | None = None,
    frame_rate: float | None = None,
    capture: int = 0,
    start: float = 0.0,
    profile: TrafficProfile | None = None,
) -> FrameTable:
    """``seconds`` of attack-free traffic from the vehicle of ``seed`` (or ``profile``).

    Same ``seed`` and ``capture`` → identical frames; another ``capture`` → another recording of the
    same vehicle. Timestamps start at ``start``, are sorted, and have microsecond resolution.
    """
    if profile is None:
        profile = TrafficProfile.random(seed, num_ecus=num_ecus, num_ids=num_ids, frame_rate=frame_rate)
    return profile.generate(seconds, seed=seed, capture=capture, start=start)


# ----------------------------------------------------------------------------- vehicle building


def _tune_rate(period_index: np.ndarray, target: float, rng: np.random.Generator) -> np.ndarray:
    """Move random IDs one period class faster/slower until the nominal rate is near ``target``."""
    period_index = period_index.copy()
    for _ in range(20 * len(period_index) + 100):
        rate = float((1.0 / PERIODS[period_index]).sum())
        if rate < target:
            candidates = np.flatnonzero(period_index > 0)
            if len(candidates) == 0:
                break
            i = rng.choice(candidates)
            step = 1.0 / PERIODS[period_index[i] - 1] - 1.0 / PERIODS[period_index[i]]
            if rate + step > target and rate + step - target > target - rate:
                break
            period_index[i] -= 1
        else:
            candidates = np.flatnonzero(period_index < len(PERIODS) - 1)
            if len(candidates) == 0:
                break
            i = rng.choice(candidates)
            step = 1.0 / PERIODS[period_index[i]] - 1.0 / PERIODS[period_index[i] + 1]
            if rate - step < target and target - (rate - step) > rate - target:
                break
            period_index[i] += 1
    return period_index


def _constant_byte(rng: np.random.Generator) -> int:
    draw = rng.random()
    if draw < 0.55:
        return 0x00
    if draw < 0.60:
        return 0xFF
    return int(rng.integers(0, 256))


def _random_fields(rng: np.random.Generator, dlc: int, period: float) -> tuple[Field, ...]:
    """A payload layout for one ID; fast IDs carry most counters, checksums and signals."""
    fast = period <= 0.1
    free = list(range(dlc))
    fields: list[Field] = []

    if dlc >= 3 and rng.random() < (0.35 if fast else 0.1):
        position = free.pop()  # checksums sit in the last byte
        method = str(rng.choice(["sum", "id_sum", "xor"], p=[0.4, 0.3, 0.3]))
        fields.append(Field("checksum", position, method=method))
    has_checksum = bool(fields)
    if dlc >= 2 and rng.random() < ((0.8 if has_checksum else 0.4) if fast else 0.12):
        position = free.pop(-1 if has_checksum or rng.random() < 0.5 else 0)
        style = rng.choice(3, p=[0.5, 0.25, 0.25])
        bits, shift = [(4, 0), (2, 6), (8, 0)][style]
        value = 0 if bits == 8 else int(rng.integers(0, 256)) & ~(((1 << bits) - 1) << shift) & 0xFF
        fields.append(Field("counter", position, bits=bits, shift=shift, value=value))

    num_signals = int(rng.integers(0, 4)) if fast else int(rng.random() < 0.3)
    for _ in range(num_signals):
        if not free:
            break
        start = int(rng.integers(0, len(free)))
        width = 2 if start + 1 < len(free) and free[start + 1] == free[start] + 1 and rng.random() < 0.45 else 1
        position = free[start]
        del free[start : start + width]
        channel = str(rng.choice(CHANNELS if fast else SLOW_CHANNELS))
        if width == 1:
            low = float(rng.integers(0, 60))
            high = float(min(255, low + rng.integers(80, 256)))
            noise = 0.3
        else:
            low = float(rng.integers(0, 8000))
            high = float(min(65535, low + rng.integers(4000, 50000)))
            noise = 2.0
        fields.append(Field("signal", position, width=width, channel=channel, low=low, high=high, noise=noise))

    if free and rng.random() < 0.2:
        position = free.pop(int(rng.integers(0, len(free))))
        value = _constant_byte(rng)
        fields.append(Field("event", position, value=value, alt=value ^ (1 << int(rng.integers(0, 8))), rate=float(rng.uniform(0.02, 0.3))))

    fields.extend(Field("const", position, value=_constant_byte(rng)) for position in free)
    return tuple(sorted(fields, key=lambda f: f.position))


# ----------------------------------------------------------------------------- capture generation


def _bounded_walk(n: int, sigma: float, smooth: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random walk reflected into [0, 1] (sigma per √second on the SIGNAL_GRID)."""
    steps = rng.normal(0.0, sigma * np.sqrt(SIGNAL_GRID), n)
    walk = rng.random() + np.cumsum(steps)
    if smooth > 1:
        kernel = np.ones(smooth) / smooth
        walk = np.convolve(np.pad(walk, (smooth, smooth), mode="edge"), kernel, mode="same")[smooth:-smooth]
    return 1.0 - np.abs(np.mod(walk, 2.0) - 1.0)


def _vehicle_state(seconds: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The shared physical state, sampled every SIGNAL_GRID seconds, each channel in [0, 1]."""
    n = int(np.ceil(seconds / SIGNAL_GRID)) + 2
    t = np.arange(n) * SIGNAL_GRID
    throttle = _bounded_walk(n, 0.25, 30, rng)
    speed = _bounded_walk(n, 0.06, 50, rng)
    gear_wave = 0.5 + 0.5 * np.sin(2 * np.pi * t / rng.uniform(8, 20) + rng.uniform(0, 2 * np.pi))
    rpm = np.clip(0.12 + 0.45 * throttle + 0.3 * speed * gear_wave, 0.0, 1.0)
    steering = np.clip(
        0.5 + 0.35 * (_bounded_walk(n, 0.2, 40, rng) - 0.5) + 0.1 * np.sin(2 * np.pi * t / rng.uniform(3, 9)), 0.0, 1.0
    )
    warm = rng.uniform(0.3, 0.8)
    temperature = warm + (0.85 - warm) * (1 - np.exp(-t / rng.uniform(120, 600))) + 0.01 * (_bounded_walk(n, 0.05, 100, rng) - 0.5)
    return {
        "t": t,
        "speed": speed,
        "rpm": rpm,
        "throttle": throttle,
        "steering": steering,
        "temperature": np.clip(temperature, 0.0, 1.0),
    }


def _schedule_times(schedule: IdSchedule, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Send times of one ID: a drifting periodic grid from a random phase, plus Gaussian jitter."""
    period = schedule.period * (1.0 + schedule.drift)
    phase = rng.uniform(0.0, schedule.period)
    n = max(0, int(np.ceil((seconds - phase) / period)))
    noise = np.clip(rng.normal(0.0, schedule.jitter, n), -0.45 * period, 0.45 * period)
    t = phase + np.arange(n) * period + noise
    return np.sort(t[(t >= 0.0) & (t < seconds)])


def _payload(schedule: IdSchedule, t: np.ndarray, state: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    n = len(t)
    payload = np.zeros((n, 8), dtype=np.uint8)
    checksum = None
    for field in schedule.fields:
        p = field.position
        if field.kind == "const":
            payload[:, p] = field.value
        elif field.kind == "counter":
            count = (int(rng.integers(0, 1 << field.bits)) + np.arange(n)) % (1 << field.bits)
            payload[:, p] = field.value | (count << field.shift)
        elif field.kind == "signal":
            level = np.interp(t, state["t"], state[field.channel])
            raw = field.low + (field.high - field.low) * level + rng.normal(0.0, field.noise, n)
            raw = np.clip(np.rint(raw), 0, 256**field.width - 1).astype(np.int64)
            for k in range(field.width):  # big-endian
                payload[:, p + k] = (raw >> (8 * (field.width - 1 - k))) & 0xFF
        elif field.kind == "event":
            mean_gap = 1.0 / field.rate
            count = int(t[-1] / mean_gap * 3 + 10) if n else 0
            switches = np.cumsum(rng.exponential(mean_gap, count))
            on = np.searchsorted(switches, t) % 2 == 1
            payload[:, p] = np.where(on, field.alt, field.value)
        elif field.kind == "checksum":
            checksum = field
    if checksum is not None:
        payload[:, checksum.position] = checksum_of(payload, schedule.dlc, checksum.position, checksum.method, schedule.can_id)
    return payload


def checksum_of(payload: np.ndarray, dlc: int, position: int, method: str, can_id: int = 0) -> np.ndarray:
    """The checksum byte of each row over the other ``dlc`` bytes: ``sum`` mod 256, ``id_sum`` (the
    sum plus the ID's two bytes, as Toyota does: seen on the yaris09 capture) or ``xor``."""
    others = np.delete(payload[:, :dlc], position, axis=1)
    if method in ("sum", "id_sum"):
        seed = ((can_id >> 8) + can_id) & 0xFF if method == "id_sum" else 0
        return ((others.sum(axis=1, dtype=np.uint32) + seed) & 0xFF).astype(np.uint8)
    if method == "xor":
        return np.bitwise_xor.reduce(others, axis=1).astype(np.uint8) if others.shape[1] else np.zeros(len(payload), np.uint8)
    raise ValueError(f"unknown checksum method {method!r}")


def frame_seconds(dlc: np.ndarray, bitrate: int) -> np.ndarray:
    """Time one standard data frame occupies the bus: 47 overhead bits + 8·DLC, plus ~10 % stuff bits."""
    bits = 47 + 8 * dlc.astype(np.float64)
    return bits * 1.1 / bitrate


def _serialise(timestamp: np.ndarray, dlc: np.ndarray, bitrate: int) -> np.ndarray:
    """One frame at a time on the bus: a frame ready while the bus is busy waits (FIFO).

    t'_i = max(t_i, t'_{i-1} + d_{i-1}); with D_i the sum of the earlier durations this is
    t'_i = D_i + cummax(t_i - D_i), one vectorised pass.
    """
    if len(timestamp) == 0:
        return timestamp
    duration = frame_seconds(dlc, bitrate)
    before = np.concatenate([[0.0], np.cumsum(duration[:-1])])
    return before + np.maximum.accumulate(timestamp - before)


# ----------------------------------------------------------------------------- attacks


def _bursts(t0: float, t1: float, rng: np.random.Generator, count: int | None = None, share: float | None = None):
    """A few non-overlapping intervals covering ``share`` (default 10–30 %) of [t0, t1); the first
    starts after at least 5 % of the capture, so a replay always has history to draw from."""
    span = t1 - t0
    count = int(rng.integers(2, 5)) if count is None else int(count)
    share = float(rng.uniform(0.1, 0.3)) if share is None else float(share)
    lengths = rng.dirichlet(np.full(count, 4.0)) * share * span
    gaps = rng.dirichlet(np.full(count + 1, 2.0)) * (1 - share - 0.05) * span
    gaps[0] += 0.05 * span
    starts = t0 + np.cumsum(gaps[:-1]) + np.concatenate([[0.0], np.cumsum(lengths[:-1])])
    return [(float(a), float(a + length)) for a, length in zip(starts, lengths)]


def attack_intervals(
    table: FrameTable, seed: int, start: float | None = None, duration: float | None = None
) -> list[tuple[float, float]]:
    """The absolute [start, end) intervals ``inject`` uses for these arguments (``start`` is
    relative to the capture's first frame; neither given → 2–4 random bursts covering 10–30 %)."""
    if len(table) == 0:
        raise KdcoreError("cannot inject into an empty capture")
    t0, t1 = float(table.timestamp.min()), float(table.timestamp.max())
    span = t1 - t0
    if span <= 0:
        raise KdcoreError("cannot inject into a capture that spans no time")
    rng = _rng(seed, 2)
    if start is None and duration is None:
        return _bursts(t0, t1, rng)
    if duration is not None and not duration > 0:
        raise KdcoreError(f"attack duration must be positive, got {duration}")
    if start is None:
        length = min(float(duration), 0.95 * span)
        a = t0 + rng.uniform(0.05 * span, span - length) if length < 0.95 * span else t0 + 0.05 * span
        return [(float(a), float(a + length))]
    if not 0 <= start < span:
        raise KdcoreError(f"attack start {start} s is outside the capture (0 … {span:.3f} s after its first frame)")
    a = t0 + float(start)
    b = min(t1, a + (0.2 * span if duration is None else float(duration)))
    return [(a, b)]


def inject(
    table: FrameTable,
    attack: str,
    seed: int,
    start: float | None = None,
    duration: float | None = None,
    *,
    intervals: Sequence[tuple[float, float]] | None = None,
    target_id: int | None = None,
    period: float | None = None,
) -> FrameTable:
    """A copy of ``table`` with ``attack`` (dos, fuzzy, spoof, replay, suspend) carried out.

    ``start`` (seconds after the first frame) and ``duration`` place one attack interval; with
    neither, 2–4 random bursts cover 10–30 % of the capture; ``intervals`` gives absolute
    [start, end) times directly. ``target_id`` is the spoofed / suspended (optionally replayed)
    ID, chosen from the capture when absent; ``period`` overrides the injection period.
    Injected frames get label 1 and the attack's name as type; for ``suspend`` no frame is
    injected: the target's frames inside the interval are removed and every other normal frame
    inside it is labelled as the attack (see docs/synthetic.md). Output is time-sorted; the input
    table is not modified.
    """
    if attack not in ATTACKS:
        raise KdcoreError(unknown_name_message("attack", attack, ATTACKS))
    if intervals is None:
        intervals = attack_intervals(table, seed, start, duration)
    elif len(table) == 0:
        raise KdcoreError("cannot inject into an empty capture")
    intervals = [(float(a), float(b)) for a, b in intervals if b > a]
    rng = _rng(seed, 3, ATTACKS.index(attack))

    names = tuple(table.attack_names)
    if attack not in names:
        names = (*names, attack)
    code = names.index(attack)
    base = attrs.evolve(table, attack_names=names)
    if not intervals:
        return base

    if attack == "suspend":
        return _suspend(base, intervals, code, rng, target_id)

    normal = base.label == 0
    if attack == "spoof":
        if target_id is None:
            target_id = _pick_target(base.take(normal), rng)
        dlc, forged = _forged_payload(base, normal, target_id, min(a for a, _ in intervals), rng)
    parts = []
    for a, b in intervals:
        if attack == "dos":
            t = _injection_times(a, b, period or ATTACK_PERIOD["dos"], rng)
            parts.append((t, np.full(len(t), DOS_ID), np.full(len(t), 8), np.zeros((len(t), 8))))
        elif attack == "fuzzy":
            t = _injection_times(a, b, period or ATTACK_PERIOD["fuzzy"], rng)
            parts.append((t, rng.integers(0, 0x800, len(t)), np.full(len(t), 8), rng.integers(0, 256, (len(t), 8))))
        elif attack == "spoof":
            t = _injection_times(a, b, period or ATTACK_PERIOD["spoof"], rng)
            parts.append((t, np.full(len(t), target_id), np.full(len(t), dlc), np.tile(forged, (len(t), 1))))
        elif attack == "replay":
            parts.append(_replay_slice(base, normal, a, b, rng, target_id))
    if not parts:
        return base
    timestamp = np.concatenate([p[0] for p in parts])
    injected = FrameTable.from_frames(
        timestamp,
        np.concatenate([p[1] for p in parts]).astype(np.uint32),
        np.concatenate([p[2] for p in parts]).astype(np.uint8),
        np.concatenate([p[3] for p in parts]).reshape(-1, 8).astype(np.uint8),
        label=np.ones(len(timestamp), np.uint8),
        attack_type=np.full(len(timestamp), code, np.uint8),
        attack_names=names,
    )
    merged = FrameTable.concat([base, injected])
    return merged.take(np.argsort(merged.timestamp, kind="stable"))


def _injection_times(a: float, b: float, period: float, rng: np.random.Generator) -> np.ndarray:
    """Every ``period`` seconds in [a, b), with a little attacker jitter, microsecond resolution."""
    n = max(0, int(np.ceil((b - a) / period)))
    jitter = np.clip(rng.normal(0.0, INJECTION_JITTER * period, n), -3 * INJECTION_JITTER * period, 3 * INJECTION_JITTER * period)
    t = np.round(a + np.arange(n) * period + jitter, 6)
    return np.sort(t[(t >= a) & (t < b)])


def _pick_target(normal: FrameTable, rng: np.random.Generator) -> int:
    """A frequent ID (≥ 10 Hz) whose payload varies — where RPM, speed or gear would live."""
    if len(normal) == 0:
        raise KdcoreError("the capture has no normal frames to pick an attack target from")
    ids, inverse, counts = np.unique(normal.can_id, return_inverse=True, return_counts=True)
    span = max(float(np.ptp(normal.timestamp)), 1e-9)
    rate = counts / span
    varying = np.zeros(len(ids), dtype=bool)
    order = np.argsort(inverse, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    payload = normal.payload[order]
    for k in range(len(ids)):
        rows = payload[bounds[k] : bounds[k + 1]]
        varying[k] = len(rows) > 1 and bool((rows != rows[0]).any())
    candidates = np.flatnonzero((rate >= 10) & varying)
    if len(candidates) == 0:
        candidates = np.flatnonzero(counts == counts.max())
    return int(ids[rng.choice(candidates)])


def _forged_payload(table: FrameTable, normal: np.ndarray, target_id: int, a: float, rng: np.random.Generator):
    """One constant, plausible payload for ``target_id`` for the whole attack: its last genuine
    payload before the first interval with its most variable byte set to a fixed forged value
    (as the Car-Hacking gear/RPM spoofs send one constant payload)."""
    rows = np.flatnonzero(normal & (table.can_id == target_id))
    if len(rows) == 0:
        raise KdcoreError(f"CAN ID 0x{target_id:03X} does not occur in the capture; cannot spoof it")
    before = rows[table.timestamp[rows] < a]
    template_row = before[-1] if len(before) else rows[0]
    dlc = int(table.dlc[template_row])
    forged = table.payload[template_row].copy()
    if dlc:
        spread = table.payload[rows, :dlc].astype(np.float64).std(axis=0)
        byte = int(np.argmax(spread)) if spread.max() > 0 else dlc - 1
        forged[byte] = (int(forged[byte]) + int(rng.integers(64, 192))) % 256  # far from the genuine value
    return dlc, forged


def _replay_slice(table: FrameTable, normal: np.ndarray, a: float, b: float, rng: np.random.Generator, target_id):
    """Normal frames of an earlier stretch as long as [a, b), re-sent shifted into [a, b)."""
    t0 = float(table.timestamp.min())
    length = b - a
    source_start = float(rng.uniform(t0, a - length)) if a - length > t0 else t0
    source_end = min(source_start + length, a)
    mask = normal & (table.timestamp >= source_start) & (table.timestamp < source_end)
    if target_id is not None:
        mask &= table.can_id == target_id
    rows = np.flatnonzero(mask)
    t = np.round(table.timestamp[rows] + (a - source_start), 6)
    keep = (t >= a) & (t < b)  # rounding must not push a frame out of the interval
    rows, t = rows[keep], t[keep]
    return t, table.can_id[rows], table.dlc[rows], table.payload[rows]


def _suspend(table: FrameTable, intervals, code: int, rng: np.random.Generator, target_id: int | None) -> FrameTable:
    normal = table.label == 0
    if target_id is None:
        target_id = _pick_target(table.take(normal), rng)
    elif not np.any(normal & (table.can_id == target_id)):
        raise KdcoreError(f"CAN ID 0x{target_id:03X} does not occur in the capture; cannot suspend it")
    inside = np.zeros(len(table), dtype=bool)
    for a, b in intervals:
        inside |= (table.timestamp >= a) & (table.timestamp < b)
    removed = inside & normal & (table.can_id == target_id)
    marked = inside & normal & ~removed
    label = table.label.copy()
    attack_type = table.attack_type.copy()
    label[marked] = 1
    attack_type[marked] = code
    return attrs.evolve(table, label=label, attack_type=attack_type).take(~removed)


# ----------------------------------------------------------------------------- datasets on disk


def _summarise(tables: dict[str, FrameTable]) -> dict:
    return {
        "files": sorted(tables),
        "frames": int(sum(len(t) for t in tables.values())),
        "attack_frames": int(sum(t.attack_rows for t in tables.values())),
    }


def build_ctt_dataset(
    *,
    seconds_train: float = 50.0,
    seconds_attack: float = 20.0,
    seconds_test: float = 20.0,
    seed: int = 0,
    attacks: Sequence[str] = ("dos", "fuzzy", "spoof"),
    num_ecus: int | None = None,
    num_ids: int | None = None,
) -> tuple[TrafficProfile, dict[str, dict[str, FrameTable]]]:
    """The vehicle and the tables ``write_ctt_dataset`` writes: {folder: {file name: table}}."""
    attacks = tuple(attacks)
    for attack in attacks:
        if attack not in ATTACKS:
            raise KdcoreError(unknown_name_message("attack", attack, ATTACKS))
    if len(set(attacks)) != len(attacks):
        raise KdcoreError(f"each attack once, please: got {', '.join(attacks)}")
    profile = TrafficProfile.random(seed, num_ecus=num_ecus, num_ids=num_ids)
    targets = profile.signal_ids() or [int(profile.ids[0].can_id)]

    def capture(index: int, seconds: float) -> FrameTable:
        return profile.generate(seconds, seed=seed, capture=index)

    def attacked(index: int, seconds: float, attack: str, into_validation: bool = False) -> FrameTable:
        table, target = capture(index, seconds), targets[index % len(targets)] if attack in ("spoof", "suspend") else None
        intervals = attack_intervals(table, seed * 1000 + index)
        if into_validation:
            intervals = reaching_validation(intervals, float(table.timestamp[0]), float(table.timestamp[-1]))
        return inject(table, attack, seed=seed * 1000 + index, intervals=intervals, target_id=target)

    folders: dict[str, dict[str, FrameTable]] = {"train_01_attack_free": {"attack-free-1.csv": capture(0, seconds_train)}}
    folders["train_02_with_attacks"] = {
        f"{attack}-1.csv": attacked(1 + i, seconds_attack, attack, into_validation=True) for i, attack in enumerate(attacks)
    }
    for i, attack in enumerate(attacks):
        folders[f"test_{i + 1:02d}_{attack}"] = {f"{attack}-1.csv": attacked(1 + len(attacks) + i, seconds_test, attack)}
    return profile, folders


VALIDATION_SHARE = 0.15  # the default val_fraction: the end of each training capture that validates


def reaching_validation(intervals: list[tuple[float, float]], t0: float, t1: float) -> list[tuple[float, float]]:
    """The bursts, the last moved later when needed so that it ends inside the capture's last
    ``VALIDATION_SHARE``: the validation split then holds attack windows, which fusion (and
    thresholds fitted for F1) need, whatever the seed."""
    start_of_validation, end = t0 + (1 - VALIDATION_SHARE) * (t1 - t0), t0 + 0.95 * (t1 - t0)
    *earlier, (a, b) = intervals
    if b > start_of_validation:
        return intervals
    return [*earlier, (end - (b - a), end)]


def write_ctt_dataset(out_dir: str | Path, *, seed: int = 0, **options) -> dict:
    """Write a can-train-and-test folder of one synthetic vehicle (~300–450 k frames by default);
    ``options`` are ``build_ctt_dataset``'s (durations, attacks, vehicle shape).

    - ``train_01_attack_free/attack-free-1.csv``: ``seconds_train`` of normal traffic;
    - ``train_02_with_attacks/<attack>-1.csv``: per attack, ``seconds_attack`` of another recording
      with that attack injected in random bursts (so the folder mixes all the attacks);
    - ``test_0N_<attack>/<attack>-1.csv``: per attack, a held-out ``seconds_test`` recording.

    Every file is a different recording (capture) of the same vehicle. Returns a summary: per
    folder its files, frames and attack frames, plus totals and the vehicle's shape.
    """
    from kdcore.data.formats.writers import write_csv

    profile, folders = build_ctt_dataset(seed=seed, **options)
    out_dir = Path(out_dir)
    summary: dict = {
        "out_dir": str(out_dir),
        "vehicle": {"seed": seed, "ids": len(profile.ids), "ecus": profile.num_ecus, "frame_rate": round(profile.frame_rate, 1)},
        "folders": {},
    }
    for folder, tables in folders.items():
        for name, table in tables.items():
            write_csv(table, out_dir / folder / name)
        summary["folders"][folder] = _summarise(tables)
    summary["frames"] = sum(f["frames"] for f in summary["folders"].values())
    summary["attack_frames"] = sum(f["attack_frames"] for f in summary["folders"].values())
    return summary


def seconds_for_frames(frames: int, seed: int, num_attacks: int) -> dict[str, float]:
    """Durations for ``write_ctt_dataset`` giving about ``frames`` frames in all, in the default
    proportions (train 50 : each attack file 20 : each test 20)."""
    if frames <= 0:
        raise KdcoreError(f"--frames must be positive, got {frames}")
    rate = TrafficProfile.random(seed).frame_rate
    units = 50.0 + 20.0 * 2 * num_attacks
    scale = frames / rate / units
    return {"seconds_train": 50.0 * scale, "seconds_attack": 20.0 * scale, "seconds_test": 20.0 * scale}


def inject_capture(capture_path: str | Path, attack: str, out_dir: str | Path, seed: int = 0, **options) -> Path:
    """Read an attack-free capture (any known format), inject ``attack`` and write it in the ctt
    layout as ``out_dir/test_01_<attack>/<attack>-<capture stem>.csv``; returns that CSV's path.

    ``options`` go to ``inject`` (start, duration, target_id, period).
    """
    from kdcore.data.formats import read_capture
    from kdcore.data.formats.writers import write_csv

    if attack not in ATTACKS:
        raise KdcoreError(unknown_name_message("attack", attack, ATTACKS))
    capture_path = Path(capture_path)
    table = read_capture(capture_path)
    if table.attack_rows:
        raise KdcoreError(
            f"{capture_path}: already has {table.attack_rows} attack-labelled frames; inject into an attack-free capture"
        )
    if len(table) == 0:
        raise KdcoreError(f"{capture_path}: holds no frames")
    order = np.argsort(table.timestamp, kind="stable")
    if (order != np.arange(len(order))).any():
        table = table.take(order)
    result = inject(table, attack, seed, **options)
    path = Path(out_dir) / f"test_01_{attack}" / f"{attack}-{capture_path.stem}.csv"  # named like ctt.attack_name reads
    write_csv(result, path)
    return path


__all__ = [
    "ATTACKS",
    "ATTACK_PERIOD",
    "CHANNELS",
    "Field",
    "IdSchedule",
    "TrafficProfile",
    "attack_intervals",
    "build_ctt_dataset",
    "checksum_of",
    "generate_traffic",
    "inject",
    "inject_capture",
    "write_ctt_dataset",
]
