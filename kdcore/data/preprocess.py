"""What is fitted on attack-free windows and saved with the model: how a window's nodes become
model inputs. Inference (``detect``, ``evaluate``) prepares nodes exactly the same way, and
``kdcore calibrate`` fits the vehicle-specific part again on another vehicle's clean traffic.

Two representations (``RunConfig.representation``):

- ``vocabulary``: the raw features scaled to the training data, and each node's CAN ID as a token
  of the training vehicle's ID vocabulary (the model learns an embedding per ID). A CAN ID the
  vocabulary lacks is one "unseen" token, so on another car every node is unseen.
- ``agnostic``: every node is described by its role in the window, which means the same on
  any car (its share of the frames, its priority rank, timing jitter, payload variability, DLC,
  position), and — only where the window is the training vehicle's — by what is tied to that
  vehicle: its ID token, its scaled raw features, and how far each statistic lies from that ID's
  own normal behaviour (a per-ID *profile*: mean and spread of every statistic over attack-free
  windows). A window whose recurring IDs the profile mostly does not know (another car) is
  described by its roles alone: the vehicle block is zero, every node "unprofiled", every token
  unseen. Training shows some windows that way (``profile_dropout``), so the model learns to
  judge a car it has never seen; ``kdcore calibrate`` then refits the threshold for that car.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from kdcore.data.graphs import WindowGraphs
from kdcore.data.windows import FEATURES

if TYPE_CHECKING:
    from kdcore.data.graphset import GraphSet, MappedGraphSet

OUT_OF_VOCABULARY = 0
WINDOWS_PER_STEP = 1 << 16  # windows read at a time when fitting on parts that may not fit in memory
REPRESENTATIONS = ("vocabulary", "agnostic")

# The agnostic representation's columns: the node's role in its window and whether its vehicle
# block is present ("unprofiled": not), then the vehicle block: the raw features scaled, and each
# raw statistic (every feature but the CAN ID) as a distance from the ID's profile in profile spreads.
COUNT, POSITION, GAP_MEAN, GAP_STD, PAYLOAD_STD, DLC = (FEATURES.index(name) for name in (
    "count", "position_mean", "interarrival_mean", "interarrival_std", "payload_std", "dlc_mean"))
# Profiled: how often, how regularly and how variably an ID sends — what holds in every driving
# state. Its byte values are left to the scaled raw features: their normal range moves with the
# drive (speed, gear, temperature), and measured as deviations they called later normal driving
# an attack (docs/transfer.md).
STATISTICS = tuple(FEATURES.index(name) for name in ("count", "interarrival_mean", "interarrival_std", "payload_std", "dlc_mean"))
ROLE_FEATURES = ("frame_share", "priority_rank", "repeat_jitter", "send_period", "payload_spread", "dlc", "position", "node_share",
                 "unprofiled")
# The roles of models saved before ``send_period`` (their checkpoints name no roles): they load with these.
ROLES_BEFORE_SEND_PERIOD = ("frame_share", "priority_rank", "timing_jitter", "payload_spread", "dlc", "position", "node_share",
                            "unprofiled")
VEHICLE_BLOCK = (*(f"{name}_scaled" for name in FEATURES), *(f"{FEATURES[i]}_deviation" for i in STATISTICS))
AGNOSTIC_FEATURES = (*ROLE_FEATURES, *VEHICLE_BLOCK)
UNPROFILED = ROLE_FEATURES.index("unprofiled")
DEVIATION_CLIP = 10.0  # profile spreads: beyond this a deviation is simply "far"
SPREAD_FLOOR = 0.1  # a statistic's profile spread is at least this share of its spread over all IDs
KNOWN_SHARE = 0.5  # the profile applies to a window when it knows at least this share of its recurring IDs


@attrs.frozen(eq=False)
class Preprocessing:
    """The CAN-ID vocabulary (sorted; token 0 is reserved for unseen IDs), per-feature mean/std,
    and the per-ID profile: the mean and spread of every raw statistic over the attack-free
    windows an ID appears in (rows follow the vocabulary).

    A feature value may be absent (NaN: timing features of a capture without timestamps): means
    and spreads are fitted on the values present, and an absent value counts as the mean.
    ``aliases`` (calibrated ``vocabulary`` models) maps another vehicle's IDs to the tokens of the
    training IDs whose profiles they resemble most. ``recorded_ids`` (calibrated models) are the
    IDs of the calibration recording: what the vehicle sends, against which an alert's IDs are
    found foreign (``vehicle_ids``, ``kdcore.classes.suspect_cue``). ``roles``: the role columns
    of an ``agnostic`` node, in order (``ROLE_FEATURES``; fewer for a model saved before some).
    """

    vocabulary: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    profile_mean: np.ndarray
    profile_std: np.ndarray
    representation: str = "vocabulary"
    aliases: dict[int, int] = attrs.field(factory=dict)
    recorded_ids: np.ndarray | None = None
    roles: tuple[str, ...] = ROLE_FEATURES

    @property
    def vehicle_ids(self) -> np.ndarray:
        """The IDs the vehicle judged sends: the calibration recording's, else the training vocabulary
        (fitted on attack-free windows). Empty for a model calibrated before they were recorded."""
        return self.vocabulary if self.recorded_ids is None else self.recorded_ids

    @property
    def num_ids(self) -> int:
        """Tokens the model embeds: the vocabulary plus the unseen token."""
        return len(self.vocabulary) + 1

    @property
    def num_features(self) -> int:
        return len(self.roles) + len(VEHICLE_BLOCK) if self.representation == "agnostic" else len(FEATURES)

    @classmethod
    def fit(cls, graphs: WindowGraphs, representation: str = "vocabulary") -> Preprocessing:
        """Fit on the attack-free windows of ``graphs`` only."""
        return cls.fit_parts([graphs], representation)

    @classmethod
    def fit_parts(cls, parts: Sequence[WindowGraphs], representation: str = "vocabulary") -> Preprocessing:
        """``fit`` on the concatenation of ``parts``, reading a slice of windows at a time, so the
        parts may be memory-mapped and bigger than memory.

        Sums are carried from slice to slice so that every addition happens in the same order as
        over the whole array: numpy sums a column row after row, and ``bincount`` a bin element
        after element, so the running total goes first.
        """
        if representation not in REPRESENTATIONS:
            raise ValueError(f"representation must be one of {', '.join(REPRESENTATIONS)}, got {representation!r}")
        count, total, vocabulary = 0, np.zeros(0), np.zeros(0, np.uint32)
        for x, can_id in _normal_nodes(parts):
            present = ~np.isnan(x)
            count = count + present.sum(axis=0)
            total = _running_sum(total, np.where(present, x, 0.0))
            vocabulary = np.union1d(vocabulary, can_id)
        if len(vocabulary) == 0:
            raise ValueError("no attack-free windows to fit the vocabulary, scaling and profile on")
        mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        squares = np.zeros(0)
        shape = (len(vocabulary), len(FEATURES))
        id_count, id_sum, id_squares = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        for x, can_id in _normal_nodes(parts):
            squares = _running_sum(squares, np.nan_to_num((x - mean) ** 2, nan=0.0))
            row = np.searchsorted(vocabulary, can_id)
            present = ~np.isnan(x)
            id_count = _binned_sum(id_count, row, present.astype(np.float64))
            id_sum = _binned_sum(id_sum, row, np.where(present, x, 0.0))
            id_squares = _binned_sum(id_squares, row, np.where(present, x, 0.0) ** 2)
        std = np.sqrt(squares / np.maximum(count, 1))
        with np.errstate(invalid="ignore", divide="ignore"):
            profile_mean = id_sum / id_count  # NaN where an ID never had the statistic
            profile_std = np.sqrt(np.clip(id_squares / id_count - profile_mean**2, 0, None))
        return cls(vocabulary=vocabulary, mean=mean, std=np.where(std > 1e-8, std, 1.0),
                   profile_mean=profile_mean, profile_std=profile_std, representation=representation)

    def calibrated(self, graphs: WindowGraphs) -> Preprocessing:
        """This preprocessing refitted on another vehicle's attack-free ``graphs``.

        ``agnostic``: the vehicle block goes (no ID is known any more): the new vehicle is judged by
        its nodes' roles alone, as training taught the model with ``profile_dropout``. A profile
        fitted on a short recording would not do: measured, a minute at idle calls the same car's
        normal driving an attack (docs/transfer.md). ``vocabulary``: the scaling becomes the
        vehicle's, the model's ID tokens stay, and each ID it has never seen is aliased to the
        training ID whose profile (rate, timing, DLC, payload spread) is nearest.
        """
        recorded_ids = np.unique(graphs.can_id).astype(np.uint32)
        if self.representation == "agnostic":
            no_ids = np.zeros((0, len(FEATURES)))
            return attrs.evolve(self, vocabulary=np.zeros(0, np.uint32), profile_mean=no_ids, profile_std=no_ids,
                                recorded_ids=recorded_ids)
        fitted = Preprocessing.fit(graphs, self.representation)
        return attrs.evolve(self, mean=fitted.mean, std=fitted.std, aliases=self._aliases_for(fitted), recorded_ids=recorded_ids)

    def _aliases_for(self, target: Preprocessing) -> dict[int, int]:
        roles = [COUNT, GAP_MEAN, DLC, PAYLOAD_STD]

        def role(profile_mean: np.ndarray) -> np.ndarray:
            values = np.nan_to_num(profile_mean[:, roles], nan=0.0)
            return np.log1p(np.abs(values) / self.std[roles])

        own = self.id_token(target.vocabulary) == OUT_OF_VOCABULARY
        distance = ((role(target.profile_mean[own])[:, None, :] - role(self.profile_mean)[None, :, :]) ** 2).sum(-1)
        nearest = distance.argmin(axis=1) + 1
        return {int(can_id): int(token) for can_id, token in zip(target.vocabulary[own], nearest)}

    def id_token(self, can_id: np.ndarray) -> np.ndarray:
        can_id = np.asarray(can_id)
        position = np.searchsorted(self.vocabulary, can_id)
        found = position < len(self.vocabulary)
        found[found] = self.vocabulary[position[found]] == can_id[found]
        tokens = np.where(found, position + 1, OUT_OF_VOCABULARY)
        if self.aliases:
            unseen = ~found
            tokens[unseen] = [self.aliases.get(int(i), OUT_OF_VOCABULARY) for i in can_id[unseen]]
        return tokens

    def scale(self, x: np.ndarray) -> np.ndarray:
        """Scaled float32 features; an absent (NaN) value becomes 0, the training mean."""
        return np.nan_to_num((x - self.mean) / self.std, nan=0.0).astype(np.float32)

    def inputs(self, x: np.ndarray, can_id: np.ndarray, node_ptr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model inputs of the nodes of the windows ``node_ptr`` delimits (raw ``x``, CAN IDs):
        float32 features and int64 ID tokens."""
        if self.representation == "vocabulary":
            return self.scale(x), self.id_token(can_id).astype(np.int64)
        return self._agnostic(np.asarray(x, np.float64), np.asarray(can_id), np.asarray(node_ptr))

    def _agnostic(self, x: np.ndarray, can_id: np.ndarray, node_ptr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nodes_per_window = np.diff(node_ptr)
        window_of_node = np.repeat(np.arange(len(nodes_per_window)), nodes_per_window)
        frames = np.add.reduceat(x[:, COUNT], node_ptr[:-1])[window_of_node] if len(x) else np.zeros(0)
        nodes = nodes_per_window[window_of_node].astype(np.float64)
        # Nodes are in ascending CAN-ID order within a window (windows.build_window_graphs).
        rank = (np.arange(len(x)) - node_ptr[:-1][window_of_node]) / np.maximum(nodes - 1, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            jitter = np.clip(np.nan_to_num(np.where(x[:, GAP_MEAN] > 0, x[:, GAP_STD] / x[:, GAP_MEAN], 0.0), nan=0.0), 0, 5)
        vehicle_block = np.zeros((len(x), len(FEATURES) + len(STATISTICS)))
        tokens = np.full(len(x), OUT_OF_VOCABULARY, np.int64)
        profiled = np.zeros(len(x), bool)
        if len(self.vocabulary):
            row = np.minimum(np.searchsorted(self.vocabulary, can_id), len(self.vocabulary) - 1)
            known = self.vocabulary[row] == can_id
            ours = ~_mostly_unknown(known, x[:, COUNT] >= 2, window_of_node, len(nodes_per_window))[window_of_node]
            profiled = known & ours
            spread = np.maximum(np.nan_to_num(self.profile_std[row], nan=0.0), SPREAD_FLOOR * self.std)
            with np.errstate(invalid="ignore"):
                deviation = np.clip((x - self.profile_mean[row]) / spread, -DEVIATION_CLIP, DEVIATION_CLIP) / 3
            deviation = np.where(profiled[:, None], np.nan_to_num(deviation, nan=0.0), 0.0)[:, list(STATISTICS)]
            vehicle_block = np.where(ours[:, None], np.column_stack([self.scale(x), deviation]), 0.0)
            tokens = np.where(ours, self.id_token(can_id), OUT_OF_VOCABULARY).astype(np.int64)
        roles = {
            "frame_share": lambda: x[:, COUNT] / np.maximum(frames, 1),
            "priority_rank": lambda: rank,
            "timing_jitter": lambda: jitter,
            "repeat_jitter": lambda: _repeat_jitter(x, jitter, window_of_node, len(nodes_per_window)),
            "send_period": lambda: _send_period(x, window_of_node, len(nodes_per_window)),
            "payload_spread": lambda: x[:, PAYLOAD_STD] / 64,
            "dlc": lambda: x[:, DLC] / 8,
            "position": lambda: x[:, POSITION],
            "node_share": lambda: nodes / np.maximum(frames, 1),
            "unprofiled": lambda: ~profiled,
        }
        return np.column_stack([*(roles[name]() for name in self.roles), vehicle_block]).astype(np.float32), tokens

    def foreign_windows(self, graphs: WindowGraphs) -> np.ndarray:
        """Per window of ``graphs``: whether fewer than ``KNOWN_SHARE`` of its recurring IDs are in the
        vocabulary — another vehicle's traffic, for a model not calibrated for it (an ``agnostic``
        model judges such a window by roles alone)."""
        nodes_per_window = np.diff(graphs.node_ptr)
        window_of_node = np.repeat(np.arange(len(nodes_per_window)), nodes_per_window)
        return _mostly_unknown(np.isin(graphs.can_id, self.vocabulary), graphs.x[:, COUNT] >= 2, window_of_node, len(nodes_per_window))

    def apply(self, graphs: WindowGraphs) -> GraphSet:
        from kdcore.data.graphset import GraphSet

        return GraphSet(graphs, *self.inputs(graphs.x, graphs.can_id, graphs.node_ptr))

    def prepare(self, x: np.ndarray, can_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One window's nodes as ``apply`` prepares them: float32 features and int64 ID tokens."""
        return self.inputs(x, can_id, np.array([0, len(x)]))

    def apply_lazily(self, parts: Sequence[WindowGraphs]) -> MappedGraphSet:
        """The same graphs as ``apply(WindowGraphs.concat(parts))``, each prepared when it is read."""
        from kdcore.data.graphset import MappedGraphSet

        return MappedGraphSet(parts, self.prepare)

    def to_dict(self) -> dict[str, Any]:
        recorded = {} if self.recorded_ids is None else {"recorded_ids": self.recorded_ids.tolist()}
        return {
            "representation": self.representation,
            "vocabulary": self.vocabulary.tolist(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "profile_mean": _listed(self.profile_mean),
            "profile_std": _listed(self.profile_std),
            "aliases": [[can_id, token] for can_id, token in sorted(self.aliases.items())],
            **recorded,
            **({"roles": list(self.roles)} if self.representation == "agnostic" else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        vocabulary = np.asarray(data["vocabulary"], dtype=np.uint32)
        missing = np.full((len(vocabulary), len(FEATURES)), np.nan)  # saved before profiles existed
        return cls(
            vocabulary=vocabulary,
            mean=np.asarray(data["mean"], dtype=np.float64),
            std=np.asarray(data["std"], dtype=np.float64),
            profile_mean=_unlisted(data.get("profile_mean"), missing),
            profile_std=_unlisted(data.get("profile_std"), missing),
            representation=data.get("representation", "vocabulary"),
            aliases={int(can_id): int(token) for can_id, token in data.get("aliases", [])},
            recorded_ids=None if "recorded_ids" not in data else np.asarray(data["recorded_ids"], dtype=np.uint32),
            roles=tuple(data.get("roles", ROLES_BEFORE_SEND_PERIOD)),
        )


def _listed(array: np.ndarray) -> list:
    """Plain lists for a checkpoint (no NaN in JSON-like data: None stands for it)."""
    return [[None if np.isnan(v) else float(v) for v in row] for row in array]


def _unlisted(rows: list | None, missing: np.ndarray) -> np.ndarray:
    if rows is None:
        return missing
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64).reshape(missing.shape)


def _repeat_jitter(x: np.ndarray, jitter: np.ndarray, window_of_node: np.ndarray, num_windows: int) -> np.ndarray:
    """``jitter`` of the IDs sent three times or more in their window; an ID sent fewer times shows
    no timing of its own and takes the window's median of those that do (0 if none does).

    Measured: a flood or a fuzzing burst shortens the window so that most IDs send once or twice,
    a jitter of 0, and a GAT trained on them may learn that irregular timing means normal traffic
    (docs/transfer.md, "Why a GAT can rank the unseen replay below normal")."""
    repeated = x[:, COUNT] >= 3
    windows, values = window_of_node[repeated], jitter[repeated]
    order = np.lexsort((values, windows))
    counts = np.bincount(windows, minlength=num_windows)
    starts = np.cumsum(counts) - counts
    median = np.zeros(num_windows)
    present = counts > 0
    median[present] = values[order][starts[present] + (counts[present] - 1) // 2]
    return np.where(repeated, jitter, median[window_of_node])


def _send_period(x: np.ndarray, window_of_node: np.ndarray, num_windows: int) -> np.ndarray:
    """How often a node's ID sends, on a log scale the same on every car: 0 at 0.1 ms between
    frames (a flood), 0.5 at 10 ms, 1 at 1 s, up to 1.25. An ID sent once in its window sends at
    most once per the window's span (its longest-sending ID's). 0 without timestamps.

    A car's own fast IDs take a large share of its windows (a third of yaris09's, at 20 ms),
    which the share alone cannot tell from a flood (docs/transfer.md, "How often an ID sends")."""
    gaps = np.nan_to_num(x[:, GAP_MEAN], nan=0.0)
    span = np.zeros(num_windows)
    np.maximum.at(span, window_of_node, gaps * np.maximum(x[:, COUNT] - 1, 0))
    period = np.where(x[:, COUNT] >= 2, gaps, span[window_of_node])
    return np.where(period > 0, np.clip((np.log10(np.maximum(period, 1e-12)) + 4) / 4, 0, 1.25), 0.0)


def _mostly_unknown(known: np.ndarray, recurring: np.ndarray, window_of_node: np.ndarray, num_windows: int) -> np.ndarray:
    """Per window: whether fewer than ``KNOWN_SHARE`` of its recurring nodes are ``known``."""
    return _window_share(known & recurring, recurring, window_of_node, num_windows) < KNOWN_SHARE


def _window_share(hits: np.ndarray, of: np.ndarray, window_of_node: np.ndarray, num_windows: int) -> np.ndarray:
    """Per window: the share of its ``of`` nodes that are ``hits`` (0 for a window with none)."""
    total = np.bincount(window_of_node, weights=of, minlength=num_windows)
    return np.bincount(window_of_node, weights=hits, minlength=num_windows) / np.maximum(total, 1)


def _binned_sum(total: np.ndarray, row: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``total`` (one row per ID) plus ``values`` summed into rows ``row``, each bin summed in
    element order after its running total."""
    bins, columns = total.shape
    index = np.concatenate([np.arange(bins), row])
    values = np.concatenate([total, values])
    return np.stack([np.bincount(index, weights=values[:, j], minlength=bins) for j in range(columns)], axis=1)


def _normal_nodes(parts: Sequence[WindowGraphs]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(float64 features, CAN IDs) of the nodes of attack-free windows, a slice of windows at a time."""
    for part in parts:
        for first in range(0, len(part), WINDOWS_PER_STEP):
            windows = np.flatnonzero(np.asarray(part.y[first : first + WINDOWS_PER_STEP]) == 0) + first
            rows = part.node_rows(windows)
            if len(rows):
                yield np.asarray(part.x[rows], np.float64), np.asarray(part.can_id[rows])


def _running_sum(total: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``total`` plus the column sums of ``rows`` (float64, modified), added in row order."""
    if len(total):
        rows[0] += total
    return rows.sum(axis=0)
