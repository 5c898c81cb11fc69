"""Attack classes: the nearest class mean in a detector's window representation, or unknown."""

import numpy as np
import pytest

from kdcore.classes import UNKNOWN, AttackClasses, class_report, error_shares, suspect_cue, top_suspect_share


DOS_LIKE_SPOOF = {"dos": [2.0, 0.0, 0.0], "fuzzy": [0.0, 8.0, 0.0], "spoof": [0.0, 0.0, 2.0]}  # their windows overlap


def clusters(rng, per_class=200, centres=None, spread=1.0):
    centres = centres or {"dos": [8.0, 0.0, 0.0], "fuzzy": [0.0, 8.0, 0.0], "spoof": [0.0, 0.0, 8.0]}
    names = np.repeat(list(centres), per_class)
    embeddings = np.stack([centres[name] for name in names]) + rng.normal(0, spread, (len(names), 3))
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


def test_classes_are_used_only_on_the_representation_they_were_fitted_on(caplog):
    rng = np.random.default_rng(0)
    classes = AttackClasses.fit(*clusters(rng), fitted_on="top node")
    extra = {"attack_classes": classes.to_dict()}
    again = AttackClasses.saved_in(extra, "top node")
    assert again.fitted_on == "top node" and np.array_equal(again.means, classes.means)
    assert AttackClasses.saved_in(extra, "pooled nodes") is None  # a model whose mode now represents windows otherwise
    assert "train the model again to classify" in caplog.text
    assert AttackClasses.saved_in({}, "top node") is None
    saved_before = {key: value for key, value in classes.to_dict().items() if key != "fitted_on"}
    assert AttackClasses.saved_in({"attack_classes": saved_before}, "pooled nodes") is not None  # what every older one was fitted on
    assert AttackClasses.saved_in({"roles_attack_classes": classes.to_dict()}, "top node", "roles_attack_classes") is not None


def test_fitting_needs_attack_windows():
    with pytest.raises(ValueError, match="no attack windows"):
        AttackClasses.fit(np.zeros((0, 3)), np.array([], dtype=str))


def test_class_report_counts_known_and_unseen_attacks():
    report = class_report(["dos", "dos", "spoof", "replay"], ["dos", "spoof", "spoof", UNKNOWN], ["dos", "spoof"])
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 0, 1], [0, 1, 0]]  # rows: dos, replay, spoof
    assert report["accuracy"] == pytest.approx(2 / 3) and report["unseen_as_unknown"] == 1.0


def test_a_window_shows_foreign_ids_injected_when_its_top_suspect_or_several_of_its_ids_are_not_the_vehicles():
    vehicle = np.array([0x100, 0x200, 0x300, 0x400])
    assert suspect_cue({0x000: 0.9, 0x100: 0.1, 0x200: 0.0, 0x300: 0.2}, vehicle) == 1.0  # DoS: an ID the car never sends
    assert suspect_cue({0x100: 0.9, 0x200: 0.1, 0x300: 0.0}, vehicle) == 0.0  # spoofing: the car's own ID
    assert suspect_cue({0x100: 0.9, 0x200: 0.1, 0x300: 0.0, 0x555: 0.2}, vehicle) == 0.0  # one foreign ID, not the suspect: maybe unrecorded
    fuzzing = {0x100: 0.9, 0x200: 0.1, 0x300: 0.0, 0x400: 0.0, 0x555: 0.2, 0x666: 0.1}
    assert suspect_cue(fuzzing, vehicle) == 1.0  # several foreign IDs, though attribution names a displaced real one
    assert np.isnan(suspect_cue({0x001: 0.9, 0x002: 0.1, 0x100: 0.0}, vehicle))  # mostly another car's IDs: no cue
    assert suspect_cue({0x001: 0.9, 0x002: 0.1, 0x100: 0.0}, vehicle, vehicles_own=True) == 1.0  # the training car's: a fuzzing
    assert np.isnan(suspect_cue({0x000: 0.9, 0x100: 0.1}, None))  # the vehicle's IDs are not known
    assert np.isnan(suspect_cue({}, vehicle))


def test_the_cue_closes_the_classes_whose_training_windows_never_showed_it():
    rng = np.random.default_rng(0)
    embeddings, names = clusters(rng, centres=DOS_LIKE_SPOOF)
    cues = np.select([names == "dos", names == "spoof"], [1.0, 0.0], default=(rng.random(len(names)) < 0.3).astype(float))
    classes = AttackClasses.fit(embeddings, names, cues)
    assert classes.foreign_share.tolist() == pytest.approx([1.0, 0.3, 0.0], abs=0.06)  # dos, fuzzy, spoof
    near_dos, near_spoof = np.array([[1.4, 0.0, 0.8]]), np.array([[0.8, 0.0, 1.4]])  # dos and spoof look alike
    assert classes.predict(near_dos)[0][0] == "dos" and classes.predict(near_spoof)[0][0] == "spoof"
    assert classes.predict(near_dos, np.array([np.nan]))[0][0] == "dos"  # no cue: every class open
    assert classes.predict(near_dos, np.array([0.0]))[0][0] == "spoof"  # the car's own ID flooded: not a DoS
    assert classes.predict(near_spoof, np.array([1.0]))[0][0] == "dos"  # an ID the car never sends: not a spoof
    _, sure = classes.predict(near_dos, np.array([1.0]))
    assert sure[0] > classes.predict(near_dos)[1][0]  # with spoofing closed, the DoS call is surer
    again = AttackClasses.from_dict(classes.to_dict())
    assert np.array_equal(again.foreign_share, classes.foreign_share)
    assert again.predict(near_dos, np.array([0.0]))[0][0] == "spoof"


def test_classes_without_cues_ignore_them_and_an_unshown_cue_closes_no_class():
    rng = np.random.default_rng(1)
    embeddings, names = clusters(rng, centres=DOS_LIKE_SPOOF)
    plain = AttackClasses.fit(embeddings, names)
    assert plain.foreign_share is None and "foreign_share" not in plain.to_dict()
    near_dos = np.array([[1.4, 0.0, 0.8]])
    assert plain.predict(near_dos, np.array([0.0]))[0][0] == "dos"
    no_cue_seen = AttackClasses.fit(embeddings, names, np.full(len(names), np.nan))
    assert np.isnan(no_cue_seen.foreign_share).all()
    assert no_cue_seen.predict(near_dos, np.array([0.0]))[0][0] == "dos"
    every_class_foreign = AttackClasses.fit(embeddings, names, np.ones(len(names)))
    assert every_class_foreign.predict(near_dos, np.array([0.0]))[0][0] == "dos"  # closing every class closes none


def test_a_windows_top_suspect_share_is_of_its_positive_attribution():
    assert top_suspect_share({0x100: 0.9, 0x200: 0.1, 0x300: -0.4}) == pytest.approx(0.9)  # negative scores carry nothing
    assert top_suspect_share({0x100: 0.4, 0x200: 0.3, 0x300: 0.3}) == pytest.approx(0.4)  # a replay: many IDs share it
    assert np.isnan(top_suspect_share({0x100: -0.2, 0x200: 0.0}))  # nothing to share


def test_a_spread_window_cannot_go_to_a_class_of_one_id_attacks_and_is_unknown_where_none_is_left():
    rng = np.random.default_rng(2)
    embeddings, names = clusters(rng, centres=DOS_LIKE_SPOOF)
    cues = np.select([names == "spoof"], [0.0], default=1.0)  # dos and fuzzy inject IDs the car does not send
    one_id = np.where(rng.random(len(names)) < 0.05, 0.7, 0.97)  # dos, spoof: one ID, now and then a little less
    top_shares = np.where(names == "fuzzy", rng.uniform(0.05, 0.3, len(names)), one_id)
    classes = AttackClasses.fit(embeddings, names, cues, top_shares=top_shares)
    assert classes.share_floor.tolist() == pytest.approx([0.97, 0.075, 0.97], abs=0.02)  # what nearly all reached
    near_spoof = np.array([[0.8, 0.0, 1.4]])
    predict = lambda cue, share: classes.predict(near_spoof, np.array([cue]), np.array([share]))  # noqa: E731
    assert predict(0.0, 0.97)[0][0] == "spoof"
    assert predict(0.0, 0.6)[0][0] == "spoof"  # a spoofing on a busier bus: its ID carries less, still most
    assert predict(np.nan, np.nan)[0][0] == "spoof"  # no cues: every class open
    replay, confidence = predict(0.0, 0.3)  # the car's own IDs, many of them
    assert replay[0] == UNKNOWN and confidence[0] == 1.0  # every known class ruled out: an incident of them is unknown
    assert predict(1.0, 0.3)[0][0] == "fuzzy"  # foreign IDs, many: fuzzing is left
    near_fuzzy = np.array([[0.0, 7.0, 0.0]])
    assert classes.predict(near_fuzzy, np.array([1.0]), np.array([0.99]))[0][0] == "fuzzy"  # one ID first by far: no evidence
    again = AttackClasses.from_dict(classes.to_dict())
    assert np.array_equal(again.share_floor, classes.share_floor)
    assert again.predict(near_spoof, np.array([0.0]), np.array([0.3]))[0][0] == UNKNOWN
    saved_before = {key: value for key, value in classes.to_dict().items() if key != "share_floor"}
    assert AttackClasses.from_dict(saved_before).predict(near_spoof, np.array([0.0]), np.array([0.3]))[0][0] == "spoof"
    with_one_id_classes = {**saved_before, "spread_share": [0.05, 1.0, 0.05]}  # saved while only those had a floor
    assert AttackClasses.from_dict(with_one_id_classes).predict(near_spoof, np.array([0.0]), np.array([0.3]))[0][0] == UNKNOWN


def test_a_window_spread_far_wider_than_a_classs_windows_cannot_go_to_it():
    """The VGAE spreads every window's error over many nodes, a spoofing's less than a replay's:
    classes of few IDs are ruled out in proportion, not only those of one ID."""
    rng = np.random.default_rng(3)
    embeddings, names = clusters(rng, centres=DOS_LIKE_SPOOF)
    cues = np.select([names == "spoof"], [0.0], default=1.0)  # dos and fuzzy inject IDs the car does not send
    top_shares = np.where(names == "fuzzy", rng.uniform(0.02, 0.08, len(names)), rng.uniform(0.3, 0.6, len(names)))
    classes = AttackClasses.fit(embeddings, names, cues, top_shares=top_shares)
    spoof_floor = classes.share_floor[classes.names.index("spoof")]
    assert 0.3 < spoof_floor < 0.4
    near_spoof = np.array([[0.8, 0.0, 1.4]])
    predict = lambda cue, share: classes.predict(near_spoof, np.array([cue]), np.array([share]))[0][0]  # noqa: E731
    assert predict(0.0, 0.35) == "spoof"
    assert predict(0.0, 0.7 * spoof_floor) == "spoof"  # room for another bus
    assert predict(0.0, 0.1) == UNKNOWN  # the car's own IDs, spread as no spoofing was: a replay
    assert predict(1.0, 0.1) == "fuzzy"  # foreign IDs too, spread as a fuzzing is
    assert predict(1.0, 0.001) == "fuzzy"  # a class of many IDs: a window spread wider still is one of it


def test_calibrated_share_floors_fall_by_how_much_less_the_new_buss_top_suspects_carry():
    """On a busier bus every window's error spreads over more nodes: the VGAE's spoofed ID
    carries a third of what it did on the training car, and so do normal windows' top nodes."""
    rng = np.random.default_rng(4)
    embeddings, names = clusters(rng, centres=DOS_LIKE_SPOOF)
    cues = np.select([names == "spoof"], [0.0], default=1.0)
    top_shares = np.where(names == "fuzzy", rng.uniform(0.02, 0.08, len(names)), rng.uniform(0.3, 0.6, len(names)))
    normal_shares = rng.uniform(0.1, 0.3, 300)
    classes = AttackClasses.fit(embeddings, names, cues, top_shares=top_shares, normal_error_shares=normal_shares)
    assert classes.normal_share == pytest.approx(np.median(normal_shares))
    near_spoof = np.array([[0.8, 0.0, 1.4]])
    busier_spoof = np.array([0.12])  # a third of the training spoofing's share
    assert classes.predict(near_spoof, np.array([0.0]), busier_spoof)[0][0] == UNKNOWN
    busier = classes.calibrated(embeddings[:2], normal_shares / 3)
    assert busier.share_scale == pytest.approx(1 / 3)
    assert busier.predict(near_spoof, np.array([0.0]), busier_spoof)[0][0] == "spoof"
    assert busier.predict(near_spoof, np.array([0.0]), np.array([0.02]))[0][0] == UNKNOWN  # still a replay's spread there
    assert AttackClasses.from_dict(busier.to_dict()).share_scale == pytest.approx(1 / 3)
    assert classes.calibrated(embeddings[:2], normal_shares * 2).share_scale == 1.0  # a quieter bus: no stricter than training
    assert classes.calibrated(embeddings[:2]).share_scale == 1.0  # nothing to compare with


def test_error_shares_are_of_scores_every_node_carries():
    shares = error_shares(np.array([0.9, 0.1, 0.0, 0.4, 0.3, 0.3, 0.0, 0.0]), np.array([0, 3, 6, 8]))
    assert shares[:2].tolist() == pytest.approx([0.9, 0.4]) and np.isnan(shares[2])
    assert error_shares(np.array([0.9, 0.1, -0.4]), np.array([0, 3])) is None  # an attribution: against an attack too


def test_calibrated_classes_widen_their_radius_by_how_much_wider_the_new_vehicle_spreads():
    rng = np.random.default_rng(0)
    apart = {"dos": [20.0, 0.0, 0.0], "fuzzy": [0.0, 20.0, 0.0], "spoof": [0.0, 0.0, 20.0]}
    normal = rng.normal(0, 1, (300, 3))
    classes = AttackClasses.fit(*clusters(rng, centres=apart), normal_embeddings=normal)
    assert classes.normal_spread == pytest.approx(classes.spread(normal)) and classes.radius_scale == 1.0
    # another vehicle: its normal windows and its attacks' windows spread 2.5 times as wide
    embeddings, names = clusters(rng, 50, apart, spread=2.5)
    before, _ = classes.predict(embeddings)
    calibrated = classes.calibrated(rng.normal(0, 2.5, (300, 3)))
    after, _ = calibrated.predict(embeddings)
    assert calibrated.radius_scale == pytest.approx(2.5, rel=0.15)
    assert (before == UNKNOWN).mean() > 0.3 and (after == names).mean() >= 0.9
    assert AttackClasses.from_dict(calibrated.to_dict()).radius_scale == calibrated.radius_scale
    # a short recording of a vehicle that varies less cannot show that its attacks will: the radius stays
    assert classes.calibrated(0.5 * normal).radius_scale == 1.0
    # classes saved before the spread was kept are left as they are
    old = {key: value for key, value in classes.to_dict().items() if key not in ("normal_spread", "radius_scale")}
    assert AttackClasses.from_dict(old).calibrated(3 * normal).radius_scale == 1.0


def test_a_dimension_the_training_attacks_hardly_vary_counts_no_more_than_normal_traffic_varies_it():
    rng = np.random.default_rng(2)

    def windows(count, dlc, centres=None):  # three dimensions of the attack, six of the node, and the node's DLC
        embeddings, names = clusters(rng, count, centres)
        return np.column_stack([embeddings, rng.normal(0, 1, (len(names), 6)), dlc(len(names))]), names

    # the training attacks all struck IDs of DLC 8; normal traffic's top nodes have any DLC
    attacks, names = windows(200, lambda n: np.full(n, 1.0) + rng.normal(0, 1e-3, n))
    normal = np.column_stack([rng.normal(0, 1, (300, 9)), rng.choice([0.25, 0.5, 0.75, 1.0], 300)])
    spoof_of_another_dlc, _ = windows(50, lambda n: np.full(n, 0.25), {"spoof": [0.0, 0.0, 8.0]})
    in_attack_units = AttackClasses.fit(attacks, names).predict(spoof_of_another_dlc)[0]
    assert (in_attack_units == UNKNOWN).all()
    classes = AttackClasses.fit(attacks, names, normal_embeddings=normal)
    predicted = classes.predict(spoof_of_another_dlc)[0]
    assert (predicted == "spoof").mean() >= 0.7 and set(predicted) <= {"spoof", UNKNOWN}  # seed 5 of the vehicles: 0.00 → 0.81
    assert (classes.predict(attacks)[0] == names).mean() >= 0.95  # the training windows keep their classes
    assert np.array_equal(AttackClasses.from_dict(classes.to_dict()).scale, classes.scale)


def test_classes_moved_with_their_representation_name_the_moved_windows_as_before():
    rng = np.random.default_rng(1)
    classes = AttackClasses.fit(*clusters(rng))
    embeddings, names = clusters(rng, 50)
    drift = np.array([30.0, -12.0, 5.0])  # a student distilled again: every window's representation moves
    assert (classes.predict(embeddings + drift)[0] == UNKNOWN).all()
    moved, _ = classes.moved(drift).predict(embeddings + drift)
    assert np.array_equal(moved, classes.predict(embeddings)[0]) and (moved == names).mean() >= 0.95


def test_a_judge_reads_the_cues_from_the_node_scores_its_classes_were_fitted_with():
    import torch
    from types import SimpleNamespace

    from kdcore.metrics import AlertJudge

    rng = np.random.default_rng(3)
    embeddings, names = clusters(rng, centres=DOS_LIKE_SPOOF)
    classes = AttackClasses.fit(embeddings, names, np.where(names == "spoof", 0.0, 1.0), top_shares=np.where(names == "fuzzy", 0.1, 0.95))
    batch = SimpleNamespace(ptr=torch.tensor([0, 3]))  # one window of three nodes, near the spoofing windows
    embed = lambda batch: torch.tensor([[0.8, 0.0, 1.4]])  # noqa: E731
    mixed = {0x100: 0.4, 0x200: 0.3, 0x300: 0.3}  # the alert's own node scores (a fused detector's): spread
    one_id = lambda batch: torch.tensor([0.9, 0.05, 0.05])  # noqa: E731 — what the classes were fitted with: one ID
    vehicle = np.array([0x100, 0x200, 0x300])
    assert AlertJudge(lambda b: None, classes, embed, vehicle).classify(batch, [mixed])[0][0] == UNKNOWN
    assert AlertJudge(lambda b: None, classes, embed, vehicle, one_id).classify(batch, [mixed])[0][0] == "spoof"

