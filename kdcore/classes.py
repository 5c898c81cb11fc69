"""Which attack an alert is: the nearest attack class in the detector's own window representation.

A trained detector already separates attacks from normal traffic; its window representation (the
GAT's pooled nodes, the VGAE's mean latent) also tells attacks apart. ``AttackClasses`` is fitted
after training on the attack windows of the training and validation splits, whose attack names
the dataset gives (folder or file names, textual labels, sidecars): each class is the mean of its
windows' standardised representations. A window goes to the nearest class mean, with confidence
``softmax(-distance² / 2)`` over the classes; it is ``unknown`` when that confidence is below
``MIN_CONFIDENCE`` or it lies further from every class than ``RADIUS_QUANTILE`` of the training
windows lie from their own (an attack never seen). The detector's weights and its decisions do
not change, so detection quality cannot drop. numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

UNKNOWN = "unknown"
MIN_CONFIDENCE = 0.5
RADIUS_QUANTILE = 0.99


@attrs.frozen(eq=False)
class AttackClasses:
    names: tuple[str, ...] = attrs.field(converter=tuple)
    means: np.ndarray  # (classes, dim), standardised
    center: np.ndarray  # (dim,) the standardisation, fitted on the attack windows
    scale: np.ndarray
    radius: float

    @classmethod
    def fit(cls, embeddings: np.ndarray, names: np.ndarray) -> AttackClasses:
        """From the representations of attack windows and their attack names."""
        embeddings = np.asarray(embeddings, np.float64)
        classes = sorted(set(np.asarray(names).tolist()))
        if not classes:
            raise ValueError("no attack windows to fit attack classes on")
        center, scale = embeddings.mean(axis=0), embeddings.std(axis=0) + 1e-6
        standard = (embeddings - center) / scale
        means = np.stack([standard[names == name].mean(axis=0) for name in classes])
        own = np.linalg.norm(standard - means[np.searchsorted(classes, names)], axis=1)
        return cls(classes, means, center, scale, float(np.quantile(own, RADIUS_QUANTILE)))

    def predict(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class name or ``unknown``, confidence) per window."""
        standard = (np.asarray(embeddings, np.float64) - self.center) / self.scale
        distance = np.linalg.norm(standard[:, None, :] - self.means[None, :, :], axis=-1)
        nearest = distance.min(axis=1, keepdims=True)
        likelihood = np.exp(-0.5 * (distance**2 - nearest**2))  # shifted: the nearest class counts 1
        confidence = (1.0 / likelihood.sum(axis=1)) if len(distance) else np.zeros(0)
        unknown = (confidence < MIN_CONFIDENCE) | (nearest[:, 0] > self.radius)
        return np.where(unknown, UNKNOWN, np.asarray(self.names)[distance.argmin(axis=1)]), confidence

    @classmethod
    def saved_in(cls, extra: dict[str, Any]) -> AttackClasses | None:
        """The classes saved with a checkpoint (its ``extra``); None for one saved without."""
        return cls.from_dict(extra["attack_classes"]) if "attack_classes" in extra else None

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "means": self.means.tolist(), "center": self.center.tolist(),
                "scale": self.scale.tolist(), "radius": self.radius}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttackClasses:
        return cls(data["names"], np.asarray(data["means"]), np.asarray(data["center"]), np.asarray(data["scale"]),
                   float(data["radius"]))


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
