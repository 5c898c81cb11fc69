"""Attack classes: the nearest class mean in a detector's window representation, or unknown."""

import numpy as np
import pytest

from kdcore.classes import UNKNOWN, AttackClasses, class_report


def clusters(rng, per_class=200):
    centres = {"dos": [8.0, 0.0, 0.0], "fuzzy": [0.0, 8.0, 0.0], "spoof": [0.0, 0.0, 8.0]}
    names = np.repeat(list(centres), per_class)
    embeddings = np.stack([centres[name] for name in names]) + rng.normal(0, 1, (len(names), 3))
    return embeddings, names


def test_windows_go_to_the_nearest_class_and_far_ones_are_unknown():
    rng = np.random.default_rng(0)
    classes = AttackClasses.fit(*clusters(rng))
    embeddings, names = clusters(rng, 50)
    predicted, confidence = classes.predict(embeddings)
    assert (predicted == names).mean() >= 0.95 and confidence.min() > 0 and confidence.max() <= 1
    far, _ = classes.predict(np.array([[-40.0, -40.0, -40.0], [4.0, 4.0, 0.0]]))
    assert far[0] == UNKNOWN  # nothing like any class
    assert far[1] == UNKNOWN  # halfway between dos and fuzzy: no confident class
    again = AttackClasses.from_dict(classes.to_dict())
    assert np.array_equal(again.predict(embeddings)[0], predicted)


def test_fitting_needs_attack_windows():
    with pytest.raises(ValueError, match="no attack windows"):
        AttackClasses.fit(np.zeros((0, 3)), np.array([], dtype=str))


def test_class_report_counts_known_and_unseen_attacks():
    report = class_report(["dos", "dos", "spoof", "replay"], ["dos", "spoof", "spoof", UNKNOWN], ["dos", "spoof"])
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 0, 1], [0, 1, 0]]  # rows: dos, replay, spoof
    assert report["accuracy"] == pytest.approx(2 / 3) and report["unseen_as_unknown"] == 1.0
