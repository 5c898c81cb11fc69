"""Which attack an alert is: the nearest attack class in the detector's own window representation.

A trained detector already separates attacks from normal traffic; its window representation (the
GAT's pooled nodes, the VGAE's most suspicious node) also tells attacks apart; the classes keep
the name of the representation they were fitted on (``fitted_on``) and serve only that one. ``AttackClasses`` is fitted
after training on the attack windows of the training and validation splits, whose attack names
the dataset gives (folder or file names, textual labels, sidecars): each class is the mean of its
windows' standardised representations. A window goes to the nearest class mean, with confidence
``softmax(-distance² / 2)`` over the classes; it is ``unknown`` when that confidence is below
``MIN_CONFIDENCE`` or it lies further from every class than ``RADIUS_QUANTILE`` of the training
windows lie from their own (an attack never seen). The detector's weights and its decisions do
not change, so detection quality cannot drop. numpy only.

One cue no representation of roles carries is whose IDs the window holds. A flood of an ID the
car never sends (DoS) and a flood of one it does (spoofing) play the same role; on a slow bus a
spoofed ID can even outrank the car's own (docs/deployment.md). So each class also keeps the
share of its windows that show *foreign* IDs injected — IDs the vehicle does not send, as the
top suspect or several in the window (``suspect_cue``) — and a window whose cue fewer than
``MIN_CUE_SHARE`` of a class's windows showed cannot go to that class. Where the cue says nothing (the vehicle's IDs are not
known, or the window is mostly IDs the vehicle does not send: another car) every class stays open.
A window as near the DoS windows as they lie to each other, flooding the car's own ID, is a
spoofing like a DoS, not an attack never seen.

A second cue is how many IDs an attack touches. A DoS or a spoofing forges one ID, and a GAT puts
nearly all of such a window's attribution on it (its top suspect carries 0.95–1.00 of it on the
vehicles of docs/transfer.md); a replay or a fuzzing spreads it over many (0.2–0.6, under 0.2):
``top_suspect_share``. The VGAE spreads every window's error wider, in the same order (on the
camaro its top node carries 0.2–0.6 of a DoS or spoofing window's error in nearly every window,
0.05–0.1 of a replay's, 0.01–0.05 of a fuzzing's). So each class keeps the share
that nearly all its windows' top suspects carried (``share_floor``, the ``MIN_CUE_SHARE``
quantile); a class whose floor is ``FEW_IDS_SHARE`` or more is of few IDs, and a window whose top
suspect carries under ``SPREAD_SHARE / ONE_ID_SHARE`` of its floor cannot go to it — never more
than ``SPREAD_SHARE``, for a class of one ID (a floor of ``ONE_ID_SHARE`` or more). Where that
leaves no class open the window is ``unknown``: an attack on many IDs where every known attack
struck few, or touched IDs the car does not send (a replay, to classes of DoS, fuzzing and
spoofing). The gap is room for another vehicle, where a spoofed ID's share falls (0.6–0.8 on a bus
twice as busy as the training car's). The VGAE's error, which every node carries, spreads over
more nodes on a busier bus, so ``kdcore calibrate`` also lowers its floors by how much less the
recording's windows' top nodes carry than the training vehicle's normal windows' did
(``share_scale``, never above 1). A class of many IDs (fuzzing) closes to no window: on a
quieter bus its windows hold more of its IDs and spread wider still. Nor is the converse
evidence: an attack on many IDs may put one first by far in a window, so a window of one ID
closes no class.

The radius is how far the training vehicle's attack windows lie from their class; another
vehicle's windows spread wider in the same representation, its attacks too. So the classes also
keep how far the training validation normal windows lie from their mean (``normal_spread``), and
``kdcore calibrate`` measures the same on the new vehicle's recording: the radius grows by how
much wider it spreads (``radius_scale``, never below 1 — a short recording cannot show that the
vehicle varies less). Which class is nearest, and how confidently, does not change.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from kdcore.contracts import POOLED_NODES

UNKNOWN = "unknown"
MIN_CONFIDENCE = 0.5
RADIUS_QUANTILE = 0.99
MIN_CUE_SHARE = 0.1  # a class is ruled out for a cue fewer than this share of its training windows showed
OWN_SHARE = 0.5  # the cue applies to a window when at least this share of its IDs are the vehicle's
SEVERAL_FOREIGN = 2  # foreign IDs in one window that show an injection even when none is the top suspect
ONE_ID_SHARE = 0.8  # a class whose windows' top suspects nearly all carry this share of the attribution: of one ID
SPREAD_SHARE = 0.5  # a window whose top suspect carries under this share: plainly spread over several IDs
FEW_IDS_SHARE = 0.1  # a class whose windows' top suspects nearly all carry this share: of a handful of IDs at most


def suspect_cue(node_scores: dict[int, float], vehicle_ids: np.ndarray | None, vehicles_own: bool = False) -> float:
    """1.0 where a window shows IDs the vehicle does not send injected: its top suspect (its
    highest-scored node's ID) is one, or it holds ``SEVERAL_FOREIGN`` of them (fuzzing, whose
    attribution may name a displaced real ID); 0.0 otherwise — one foreign ID that is not the top
    suspect may be a real one the calibration recording missed. NaN where the cue says nothing:
    no vehicle IDs known, or fewer than ``OWN_SHARE`` of the window's IDs are the vehicle's
    (another car's traffic) — unless the window is known to be the vehicle's (``vehicles_own``,
    the training windows), where IDs it does not send, however many, are injected (a fuzzing of
    a quiet bus)."""
    if vehicle_ids is None or not len(vehicle_ids) or not node_scores:
        return np.nan
    ids = np.fromiter(node_scores, np.int64, len(node_scores))
    foreign = ~np.isin(ids, vehicle_ids)
    if foreign.mean() > 1 - OWN_SHARE and not vehicles_own:
        return np.nan
    return float(foreign[int(np.argmax(list(node_scores.values())))] or foreign.sum() >= SEVERAL_FOREIGN)


def error_shares(node_scores: np.ndarray, ptr: np.ndarray) -> np.ndarray | None:
    """``top_suspect_share`` of each window of a batch, from its nodes' scores (flat) and the
    batch's window boundaries ``ptr`` — where the scores are errors, which every node carries
    (the VGAE's), so that a window's share falls as the bus grows; None where some are negative
    (a GAT's attribution, which speaks against an attack on a normal window's nodes)."""
    scores, starts = np.asarray(node_scores, np.float64), np.asarray(ptr)[:-1]
    if (scores < 0).any():
        return None
    top, total = np.maximum.reduceat(scores, starts), np.add.reduceat(scores, starts)
    return np.divide(top, total, out=np.full(len(starts), np.nan), where=total > 0)


def top_suspect_share(node_scores: dict[int, float]) -> float:
    """The share of a window's positive node scores that its top suspect carries: near 1 where
    one ID drove the alert, small where many did; NaN where no node scores above 0."""
    positive = np.clip(np.fromiter(node_scores.values(), np.float64, len(node_scores)), 0.0, None)
    total = positive.sum()
    return float(positive.max() / total) if total > 0 else np.nan


@attrs.frozen(eq=False)
class AttackClasses:
    names: tuple[str, ...] = attrs.field(converter=tuple)
    means: np.ndarray  # (classes, dim), standardised
    center: np.ndarray  # (dim,) the standardisation, fitted on the attack windows
    scale: np.ndarray
    radius: float
    foreign_share: np.ndarray | None = None  # (classes,) share of windows showing foreign IDs injected; NaN: no cue seen
    share_floor: np.ndarray | None = None  # (classes,) the top suspect share nearly all its windows reached; NaN: none seen
    normal_spread: float | None = None  # median distance of the training vehicle's normal windows from their mean
    radius_scale: float = 1.0  # how much wider the vehicle calibrated on spreads; the radius grows by it
    normal_share: float | None = None  # median ``error_shares`` of the training vehicle's normal windows; None: not errors
    share_scale: float = 1.0  # how much less the vehicle calibrated on puts on its top suspects; the floors fall by it
    fitted_on: str = POOLED_NODES  # the window representation (``TrainingMode.window_embedding``)

    @classmethod
    def fit(cls, embeddings: np.ndarray, names: np.ndarray, cues: np.ndarray | None = None,
            normal_embeddings: np.ndarray | None = None, fitted_on: str = POOLED_NODES,
            top_shares: np.ndarray | None = None, normal_error_shares: np.ndarray | None = None) -> AttackClasses:
        """From the representations of attack windows (named ``fitted_on``), their attack names
        and, if known, their ``suspect_cue``s and ``top_suspect_share``s; with the representations
        of attack-free windows the model was not fitted on, also their ``normal_spread`` (for
        ``calibrated``) and a floor under each dimension's unit (``_class_scale``), and with those
        windows' ``error_shares`` their ``normal_share``."""
        embeddings, names = np.asarray(embeddings, np.float64), np.asarray(names)
        classes = sorted(set(names.tolist()))
        if not classes:
            raise ValueError("no attack windows to fit attack classes on")
        normal = None if normal_embeddings is None or len(normal_embeddings) < 2 else np.asarray(normal_embeddings, np.float64)
        center, scale = embeddings.mean(axis=0), _class_scale(embeddings, normal)
        standard = (embeddings - center) / scale
        means = np.stack([standard[names == name].mean(axis=0) for name in classes])
        own = np.linalg.norm(standard - means[np.searchsorted(classes, names)], axis=1)
        foreign_share = None if cues is None else np.array([_mean_present(np.asarray(cues)[names == name]) for name in classes])
        share_floor = None if top_shares is None else np.array([_floor_present(np.asarray(top_shares, np.float64)[names == name])
                                                                for name in classes])
        fitted = cls(classes, means, center, scale, float(np.quantile(own, RADIUS_QUANTILE)), foreign_share, share_floor,
                     fitted_on=fitted_on)
        fitted = attrs.evolve(fitted, normal_share=_median_present(normal_error_shares))
        return fitted if normal is None else attrs.evolve(fitted, normal_spread=fitted.spread(normal))

    def spread(self, embeddings: np.ndarray) -> float:
        """The median distance of these windows from their own mean, in the classes' standardised units."""
        standard = (np.asarray(embeddings, np.float64) - self.center) / self.scale
        return float(np.median(np.linalg.norm(standard - standard.mean(axis=0), axis=1)))

    def moved(self, drift: np.ndarray) -> AttackClasses:
        """The classes carried along a drift of the representation they were fitted in (its mean
        move over the same windows): a student distilled again on a vehicle's recording moves every
        window's representation, its classes' with them (``kdcore.calibrate``)."""
        return attrs.evolve(self, center=self.center + np.asarray(drift, np.float64))

    def calibrated(self, normal_embeddings: np.ndarray, normal_error_shares: np.ndarray | None = None) -> AttackClasses:
        """The classes for the vehicle these attack-free windows come from: the radius grown by how
        much wider they spread than the training vehicle's normal windows, never shrunk; with their
        ``error_shares``, the share floors lowered by how much less their top nodes carry (a busier
        bus), never raised. Each unchanged for classes fitted without what it compares with."""
        calibrated = self
        if self.normal_spread is not None and len(normal_embeddings) >= 2:
            calibrated = attrs.evolve(calibrated, radius_scale=max(1.0, self.spread(normal_embeddings) / max(self.normal_spread, 1e-12)))
        recording_share = _median_present(normal_error_shares)
        if self.normal_share is not None and recording_share is not None:
            calibrated = attrs.evolve(calibrated, share_scale=min(1.0, recording_share / self.normal_share))
        return calibrated

    def predict(self, embeddings: np.ndarray, cues: np.ndarray | None = None,
                top_shares: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(class name or ``unknown``, confidence) per window; with the windows' ``suspect_cue``s,
        among the classes whose training windows showed that cue; with their
        ``top_suspect_share``s, not among the classes whose windows' top suspects carried far more
        (none left: ``unknown`` with confidence 1, every known class ruled out — so that such
        windows carry an incident's class as surely as known ones, ``kdcore.incidents``)."""
        standard = (np.asarray(embeddings, np.float64) - self.center) / self.scale
        distance = np.linalg.norm(standard[:, None, :] - self.means[None, :, :], axis=-1)
        seen = distance.min(axis=1, initial=np.inf) <= self.radius * self.radius_scale  # like some attack of training, whoever's ID it is
        open_to = self._open_to(cues, len(distance)) & ~self._too_spread(top_shares, len(distance))
        left = open_to.any(axis=1)  # some class not ruled out
        distance = np.where(open_to, distance, np.inf)
        nearest = np.where(left, distance.min(axis=1, initial=np.inf), 0.0)[:, None]
        likelihood = np.exp(-0.5 * (distance**2 - nearest**2))  # shifted: the nearest open class counts 1
        confidence = np.where(left, 1.0 / np.maximum(likelihood.sum(axis=1), 1.0), 1.0)
        unknown = ~left | ~seen | (confidence < MIN_CONFIDENCE)
        return np.where(unknown, UNKNOWN, np.asarray(self.names)[distance.argmin(axis=1)]), confidence

    def _too_spread(self, top_shares: np.ndarray | None, windows: int) -> np.ndarray:
        """(windows, classes): the classes a window's ``top_suspect_share`` rules out — those of few
        IDs whose ``share_floor`` it falls under by more than ``SPREAD_SHARE / ONE_ID_SHARE``, or
        under ``SPREAD_SHARE`` for a class of one ID."""
        if top_shares is None or self.share_floor is None:
            return np.zeros((windows, len(self.names)), bool)
        floor = np.nan_to_num(self.share_floor, nan=0.0)
        cut = np.where(floor >= FEW_IDS_SHARE, np.minimum(SPREAD_SHARE, floor * (SPREAD_SHARE / ONE_ID_SHARE)) * self.share_scale, 0.0)
        return np.asarray(top_shares, np.float64)[:, None] < cut[None, :]

    def _open_to(self, cues: np.ndarray | None, windows: int) -> np.ndarray:
        """(windows, classes): which classes each window may go to. A class is closed to a cue
        fewer than ``MIN_CUE_SHARE`` of its windows showed; every class stays open to a window
        without a cue, for a class fitted without cues, and where the cue would close them all."""
        open_to = np.ones((windows, len(self.names)), bool)
        if cues is None or self.foreign_share is None:
            return open_to
        cues, share = np.asarray(cues, np.float64)[:, None], self.foreign_share[None, :]
        showed = np.where(cues == 1.0, share, 1.0 - share)  # the share of the class's windows with this cue
        open_to = np.isnan(cues) | np.isnan(showed) | (showed >= MIN_CUE_SHARE)
        return open_to | ~open_to.any(axis=1, keepdims=True)

    @classmethod
    def saved_in(cls, extra: dict[str, Any], fitted_on: str, key: str = "attack_classes") -> AttackClasses | None:
        """The classes saved with a checkpoint (its ``extra``) under ``key``, if they were fitted on
        the window representation ``fitted_on``; None for a checkpoint saved without, or with
        classes of a representation its mode no longer gives (trained before it changed)."""
        if key not in extra:
            return None
        classes = cls.from_dict(extra[key])
        if classes.fitted_on != fitted_on:
            logging.getLogger(__name__).warning(
                "attack classes fitted on %r, but the model now represents windows by %r: alerts carry no class "
                "(train the model again to classify)", classes.fitted_on, fitted_on)
            return None
        return classes

    def to_dict(self) -> dict[str, Any]:
        saved = {"names": list(self.names), "means": self.means.tolist(), "center": self.center.tolist(),
                 "scale": self.scale.tolist(), "radius": self.radius, "fitted_on": self.fitted_on}
        for key, shares in (("foreign_share", self.foreign_share), ("share_floor", self.share_floor)):
            if shares is not None:
                saved[key] = [None if np.isnan(share) else float(share) for share in shares]
        if self.normal_spread is not None:
            saved.update(normal_spread=self.normal_spread, radius_scale=self.radius_scale)
        if self.normal_share is not None:
            saved.update(normal_share=self.normal_share, share_scale=self.share_scale)
        return saved

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttackClasses:
        foreign, floor = _shares(data.get("foreign_share")), _shares(data.get("share_floor"))  # absent: saved before the cue
        if floor is None and "spread_share" in data:  # saved while only classes of one ID had a floor
            floor = np.where(_shares(data["spread_share"]) < MIN_CUE_SHARE, ONE_ID_SHARE, np.nan)
        return cls(data["names"], np.asarray(data["means"]), np.asarray(data["center"]), np.asarray(data["scale"]),
                   float(data["radius"]), foreign, floor,
                   data.get("normal_spread"), float(data.get("radius_scale", 1.0)),  # absent: saved before calibration scaled them
                   data.get("normal_share"), float(data.get("share_scale", 1.0)),
                   data.get("fitted_on", POOLED_NODES))


def _class_scale(attacks: np.ndarray, normal: np.ndarray | None) -> np.ndarray:
    """Each dimension's unit: its spread over the attack windows, but never less than over the
    normal ones. A dimension nearly constant across the training attacks yet varied in normal
    traffic tells which ID was struck, not how: seed 5 of docs/deployment.md's vehicles spoofed an
    ID of DLC 8 in training and one of DLC 2 in its test, which in attack units lay beyond every
    class — its VGAEs called every window of that spoofing unknown."""
    spread = attacks.std(axis=0)
    return (spread if normal is None else np.maximum(spread, normal.std(axis=0))) + 1e-6


def _median_present(values: np.ndarray | None) -> float | None:
    """The median of the values that are not NaN; None if none is."""
    if values is None or np.isnan(values).all():
        return None
    return float(np.nanmedian(values))


def _shares(saved: list[float | None] | None) -> np.ndarray | None:
    return None if saved is None else np.array([np.nan if share is None else share for share in saved])


def _floor_present(shares: np.ndarray) -> float:
    """The ``MIN_CUE_SHARE`` quantile of the shares that are not NaN: what nearly all reached; NaN if none is."""
    present = shares[~np.isnan(shares)]
    return float(np.quantile(present, MIN_CUE_SHARE)) if len(present) else np.nan


def _mean_present(values: np.ndarray) -> float:
    """The mean of the values that are not NaN; NaN if none is."""
    present = values[~np.isnan(values)]
    return float(present.mean()) if len(present) else np.nan


def class_report(true: Sequence[str], predicted: Sequence[str], known: Sequence[str]) -> dict[str, Any]:
    """The confusion matrix of attack windows' true attack against the predicted class (``unknown``
    a column of its own); the accuracy over windows whose attack is a known class, and the share of
    the others (attacks never seen in training) called ``unknown``."""
    true, predicted = np.asarray(true, dtype=object), np.asarray(predicted, dtype=object)
    rows = sorted(set(true.tolist()))
    columns = [*known, UNKNOWN]
    matrix = [[int(((true == row) & (predicted == column)).sum()) for column in columns] for row in rows]
    of_known = np.isin(true, list(known))
    return {"classes": columns, "true": rows, "confusion_matrix": matrix,
            "accuracy": float((predicted[of_known] == true[of_known]).mean()) if of_known.any() else None,
            "unseen_as_unknown": float((predicted[~of_known] == UNKNOWN).mean()) if (~of_known).any() else None}
