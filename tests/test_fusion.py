"""The ``fusion`` mode: a DQN agent fusing the VGAE and GAT scores of already trained models."""

import json
import shutil
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
from torch_geometric.loader import DataLoader

from kdcore import Engine, hookimpl
from kdcore.checkpoint import load_checkpoint
from kdcore.data.dataset import DataInfo
from kdcore.data.formats import read_capture
from kdcore.data.windows import build_window_graphs, node_keys
from kdcore.errors import IncompatibleError, KdcoreError
from kdcore.models import build_model
from kdcore.models.dqn import DQN
from kdcore.fusion import FusionPredictor, ScoreNormaliser, fused_score, rewards
from kdcore.metrics import ScoreSpread, log_odds, threshold_at_fpr
from kdcore.plugins.modes.fusion import ACTIONS, STATE_FEATURES, find_inputs, input_candidates
from kdcore.plugins.validation import FUSION_KD_MESSAGE

from conftest import TinyCAN, tiny_capture, tiny_config
from kdcore.calibrate import calibrate
from kdcore.data.formats.writers import write_csv
from kdcore.detect import Detector

TIMINGS = ("train_seconds", "latency_ms_per_graph")


@pytest.fixture(scope="module")
def fusion_root(tmp_path_factory, teacher_root):
    """A private copy of the teachers' root, so fusion runs neither see nor disturb other tests' runs."""
    root = tmp_path_factory.mktemp("fusion") / "root"
    shutil.copytree(teacher_root, root)
    return root


@pytest.fixture(scope="module")
def fusion_run(engine, fusion_root):
    return engine.run(tiny_config(fusion_root, mode="fusion"))


def input_metrics(run_dir):
    return json.loads((run_dir.parent.parent / "metrics.json").read_text())


def test_dqn_is_a_registered_model_built_like_the_others(engine):
    assert engine.models.get("dqn") is DQN
    info = DataInfo(num_node_features=15, num_ids=67)
    for size in ("teacher", "student"):
        model = build_model(DQN, size, info)  # the data-dependent arguments are accepted and ignored
        assert model.hparams == {"state_dim": len(STATE_FEATURES), "num_actions": len(ACTIONS), **DQN.sizes[size]}
        assert DQN(**model.hparams)(torch.zeros(3, len(STATE_FEATURES))).shape == (3, len(ACTIONS))


def test_fusion_trains_and_writes_complete_artifacts(engine, fusion_root, fusion_run):
    layout = fusion_run.layout
    assert layout.is_complete() and layout.config.is_file()
    assert layout.root == fusion_root / "automotive/tiny/fusion/dqn/teacher/no-kd/fusion"
    assert layout.checkpoint.name == "dqn_fusion.pth"
    written = json.loads(layout.metrics.read_text())
    assert written == fusion_run.metrics
    assert (written["mode"], written["model"], written["distillation"], written["strategy"]) == ("fusion", "dqn", "no-kd", None)

    # The same keys as any other mode, overall and per test set.
    gat = json.loads((fusion_root / "automotive/tiny/supervised/gat/teacher/no-kd/curriculum/metrics.json").read_text())
    assert set(written) == set(gat)
    assert set(written["test_sets"]) == set(gat["test_sets"]) == {"test_01_dos", "test_02_fuzzy"}
    for name, per_set in written["test_sets"].items():
        assert set(per_set) == set(gat["test_sets"][name])
    assert sum(map(sum, written["confusion_matrix"])) == written["windows"]

    # The checkpoint is the Q-network, rebuilt by the engine's generic code, with what inference needs.
    checkpoint = load_checkpoint(layout.checkpoint)
    assert checkpoint.model == "dqn"
    model = engine.load_model(checkpoint, layout.checkpoint)
    assert isinstance(model, DQN)
    assert written["params"] == sum(p.numel() for p in model.parameters())
    fusion = checkpoint.extra["fusion"]
    assert isinstance(checkpoint.extra["threshold"], float) and checkpoint.extra["threshold"] >= 0.5, "never below the decision line"
    assert fusion["actions"] == list(ACTIONS) and fusion["state_features"] == list(STATE_FEATURES)
    assert set(fusion["vgae"]) == {"path", "score", "median", "scale", "threshold"} and fusion["vgae"]["scale"] > 0
    assert fusion["vgae"]["path"].endswith("unsupervised/vgae/teacher/no-kd/autoencoder/models/vgae_autoencoder.pth")
    assert fusion["gat"]["path"].endswith("supervised/gat/teacher/no-kd/curriculum/models/gat_curriculum.pth")
    vgae = load_checkpoint(fusion["vgae"]["path"]).extra
    assert checkpoint.extra["data"] == vgae["data"]
    assert fusion["vgae"]["threshold"] == pytest.approx(vgae["threshold"], rel=1e-5)  # v = 0.5 at the VGAE's own threshold
    spread = ScoreSpread.saved_in(checkpoint.extra)
    assert spread.log_odds and spread.scale > 0  # the fused score, a value in [0, 1], spreads in log-odds
    rows = (layout.logs / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,train_loss") and len(rows) == 2  # one epoch


def test_the_decision_is_the_fused_score_against_the_threshold(engine, fusion_root, fusion_run):
    predictor, threshold = FusionPredictor.from_checkpoint(engine, fusion_run.checkpoint)
    sure = 1 / (1 + np.exp(-load_checkpoint(fusion_run.checkpoint).extra["fusion"]["sure_margin"]))
    standing = 0
    run = engine.build(engine.plan(tiny_config(fusion_root, mode="fusion")))
    for name, graphs in run.datamodule.test_sets.items():
        parts = predictor.components(run.datamodule.loader(graphs))
        assert torch.isin(parts["alpha"], torch.tensor(ACTIONS)).all()
        assert torch.all((parts["v"] >= 0) & (parts["v"] <= 1))
        fused = parts["alpha"] * parts["p"] + (1 - parts["alpha"]) * parts["v"]
        higher = torch.maximum(parts["p"], parts["v"])
        assert torch.allclose(parts["score"][higher < sure], fused[higher < sure])
        # an input deciding alone beyond its sure margin keeps ranking there (fusion.alone_score), at or above its sure level
        assert (parts["score"][higher >= sure] >= sure - 1e-12).all()
        chosen = torch.tensor(ACTIONS, dtype=parts["alpha"].dtype)[parts["action"]]
        assert torch.equal(parts["alpha"][higher < sure], chosen[higher < sure]), "the agent's weight, but where an input is sure"
        assert torch.equal(parts["alpha"][higher >= sure], (parts["p"] >= parts["v"])[higher >= sure].to(chosen.dtype))
        standing += int((higher >= sure).sum())
        predicted = (parts["score"] >= threshold).long()
        labels = graphs.labels.long()
        matrix = [[int(((labels == t) & (predicted == p)).sum()) for p in (0, 1)] for t in (0, 1)]
        assert matrix == fusion_run.metrics["test_sets"][name]["confusion_matrix"], name
    assert standing > 0, "some windows lie beyond the sure margin, so the rule above was exercised"


def test_a_fusion_trained_on_another_vgae_score_is_refused(engine, fusion_run, tmp_path):
    from kdcore.checkpoint import save_checkpoint
    from kdcore.errors import CheckpointError
    from kdcore.plugins.modes.fusion import FusionMode

    checkpoint = load_checkpoint(fusion_run.checkpoint)
    assert FusionMode().stale(checkpoint) is None
    fusion = checkpoint.extra["fusion"]
    old = attrs.evolve(checkpoint, extra={**checkpoint.extra, "fusion": {**fusion, "vgae": {k: v for k, v in fusion["vgae"].items() if k != "score"}}})
    save_checkpoint(tmp_path / "old.pth", old)
    assert "another window score" in FusionMode().stale(old)
    with pytest.raises(CheckpointError, match="old.pth: its VGAE input's scores were normalised under another window score"):
        FusionPredictor.from_checkpoint(engine, tmp_path / "old.pth")


def test_a_fusion_that_validates_below_an_input_defers_to_it():
    from kdcore.fusion import better_input

    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    decided = {"p": torch.tensor([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]),  # the GAT alone: every window right
               "v": torch.tensor([0.6, 0.2, 0.3, 0.4, 0.8, 0.9]),  # the VGAE: one false alarm, one miss
               "score": torch.tensor([0.2, 0.2, 0.3, 0.4, 0.8, 0.9])}  # the mix misses one attack
    assert better_input(decided, labels, threshold=0.5) == "gat"
    assert better_input({**decided, "score": decided["p"]}, labels, threshold=0.5) is None, "as good: the agent stays"
    worse_gat = {**decided, "p": torch.tensor([0.6, 0.2, 0.3, 0.4, 0.8, 0.9])}
    assert better_input(worse_gat, labels, threshold=0.5) is None


def test_a_deferring_fusion_checkpoint_scores_its_input_alone(engine, fusion_root, fusion_run, tmp_path):
    from kdcore.checkpoint import save_checkpoint
    from kdcore.export import TOLERANCE, export_checkpoint, sample_windows
    from kdcore.fusion import sure_level

    checkpoint = load_checkpoint(fusion_run.checkpoint)
    assert "deferred_to" in checkpoint.extra["fusion"]
    deferring = attrs.evolve(checkpoint, extra={**checkpoint.extra, "fusion": {**checkpoint.extra["fusion"], "deferred_to": "gat"}})
    save_checkpoint(tmp_path / "deferring.pth", deferring)
    predictor, _ = FusionPredictor.from_checkpoint(engine, tmp_path / "deferring.pth")
    run = engine.build(engine.plan(tiny_config(fusion_root, mode="fusion")))
    parts = predictor.components(run.datamodule.loader(run.datamodule.test_sets["test_01_dos"]))
    sure = sure_level(predictor.sure_margin)  # beyond it the score is re-expressed (``alone_score``), not moved across it
    assert torch.all(parts["alpha"] == 1.0) and torch.equal(parts["score"] >= sure, parts["p"] >= sure)
    below = parts["p"] < sure
    assert torch.equal(parts["score"][below], parts["p"][below]) and below.any() and not below.all()
    assert torch.all(torch.tensor(ACTIONS)[parts["action"]] == 1.0)
    assert export_checkpoint(tmp_path / "deferring.pth", "torchscript", tmp_path / "deferring.pt", engine=engine).max_abs_diff <= TOLERANCE
    exported = torch.jit.load(str(tmp_path / "deferring.pt"))
    for window in sample_windows(checkpoint, count=3):
        score, p, _, alpha = exported(*window)
        assert torch.all(alpha == 1.0) and (torch.equal(score, p) if p < sure else sure <= score < 1.0)


def test_an_input_beyond_its_sure_margin_decides_whatever_the_agents_weight():
    """The agent trusts the GAT (α = 1) on windows the GAT calls normal; a VGAE score 9 spreads
    above its threshold decides alone, 7 spreads does not; and the GAT's, the other way round."""
    from kdcore.fusion import standing_alpha, sure_level

    p = torch.tensor([0.1, 0.1], dtype=torch.float64)
    v = torch.sigmoid(torch.tensor([9.0, 7.0], dtype=torch.float64))
    alpha = standing_alpha(torch.tensor([1.0, 1.0]), p, v, sure_level(8.0))
    assert alpha.tolist() == [0.0, 1.0]
    assert torch.equal(fused_score(alpha, p, v), torch.stack([v[0], p[1]]))
    assert standing_alpha(torch.tensor([0.0, 0.0]), v, p, sure_level(8.0)).tolist() == [1.0, 0.0], "the GAT's stands too"
    assert standing_alpha(torch.tensor([1.0, 1.0]), p, v, sure_level(None)).tolist() == [1.0, 1.0], "no margin: the agent's"


def test_a_fusion_checkpoint_without_a_sure_margin_fuses_as_before(engine, fusion_root, fusion_run, tmp_path):
    from kdcore.checkpoint import save_checkpoint

    checkpoint = load_checkpoint(fusion_run.checkpoint)
    fusion = {key: value for key, value in checkpoint.extra["fusion"].items() if key != "sure_margin"}
    save_checkpoint(tmp_path / "older.pth", attrs.evolve(checkpoint, extra={**checkpoint.extra, "fusion": fusion}))
    predictor, _ = FusionPredictor.from_checkpoint(engine, tmp_path / "older.pth")
    assert predictor.sure_margin is None
    run = engine.build(engine.plan(tiny_config(fusion_root, mode="fusion")))
    parts = predictor.components(run.datamodule.loader(run.datamodule.test_sets["test_01_dos"]))
    assert torch.equal(parts["alpha"], torch.tensor(ACTIONS, dtype=parts["alpha"].dtype)[parts["action"]]), "the agent's α everywhere"


def test_fusion_f1_is_at_least_that_of_the_weaker_input(fusion_run, record_property):
    extra = load_checkpoint(fusion_run.checkpoint).extra["fusion"]
    vgae = input_metrics(Path(extra["vgae"]["path"]))["f1"]
    gat = input_metrics(Path(extra["gat"]["path"]))["f1"]
    fusion = fusion_run.metrics["f1"]
    record_property("f1", {"vgae": vgae, "gat": gat, "fusion": fusion, "at_least_max": fusion >= max(vgae, gat)})
    print(f"F1 on tiny data: vgae {vgae:.4f}, gat {gat:.4f}, fusion {fusion:.4f} (>= max: {fusion >= max(vgae, gat)})")
    assert fusion >= min(vgae, gat) - 1e-6


def test_same_seed_same_metrics_and_weights(engine, fusion_root, fusion_run):
    again = engine.run(tiny_config(fusion_root, mode="fusion", progress_bar=True))  # the bar changes nothing
    assert {k: v for k, v in again.metrics.items() if k not in TIMINGS} == {
        k: v for k, v in fusion_run.metrics.items() if k not in TIMINGS
    }
    first, second = load_checkpoint(fusion_run.checkpoint), load_checkpoint(again.checkpoint)
    assert all(torch.equal(first.state_dict[key], second.state_dict[key]) for key in first.state_dict)
    assert first.extra == second.extra


class ExplodingData(TinyCAN):
    name = "exploding"

    def load_splits(self):
        raise AssertionError("data was read before the inputs were checked")


class ExplodingPlugin:
    @hookimpl
    def kdcore_register_datasets(self, register):
        register(ExplodingData)


def test_missing_inputs_are_refused_before_any_data_is_read(tmp_path):
    engine = Engine(plugins=[ExplodingPlugin()], load_entry_points=False)
    with pytest.raises(KdcoreError) as caught:
        engine.run(tiny_config(tmp_path, mode="fusion", dataset="exploding"))
    message = str(caught.value)
    assert "\n" not in message
    for path in ("unsupervised/vgae/teacher/no-kd/autoencoder/models/vgae_autoencoder.pth",
                 "supervised/gat/teacher/no-kd/curriculum/models/gat_curriculum.pth",
                 "supervised/gat/teacher/no-kd/normal/models/gat_normal.pth"):
        assert f"{tmp_path}/automotive/exploding/{path}" in message
    assert f"`kdcore run --mode autoencoder --dataset exploding --experiment-root {tmp_path}`" in message
    assert f"`kdcore run --mode curriculum --dataset exploding --experiment-root {tmp_path}`" in message
    assert not any(tmp_path.iterdir()), "a refused run must not write anything"

    with pytest.raises(KdcoreError) as caught:
        engine.plan(tiny_config(tmp_path, mode="fusion", dataset="exploding", model_size="student"))
    message = str(caught.value)
    assert "vgae/student/with-kd/autoencoder" in message and "vgae/student/no-kd/autoencoder" in message
    assert "gat/student/with-kd/curriculum" in message and "gat/student/no-kd/normal" in message
    assert "--model-size student --distillation with-kd" in message


def test_only_the_missing_input_is_named(engine, fusion_root, tmp_path):
    vgae_run = "automotive/tiny/unsupervised/vgae/teacher/no-kd/autoencoder"
    shutil.copytree(fusion_root / vgae_run, tmp_path / vgae_run)
    with pytest.raises(KdcoreError, match="needs a trained VGAE and GAT teacher: no trained GAT at ") as caught:
        engine.plan(tiny_config(tmp_path, mode="fusion"))
    assert "no trained VGAE" not in str(caught.value)
    (tmp_path / vgae_run / "metrics.json").unlink()  # an incomplete run does not count
    with pytest.raises(KdcoreError, match="no trained VGAE at "):
        engine.plan(tiny_config(tmp_path, mode="fusion"))


def test_student_inputs_prefer_distilled_students(tmp_path):
    config = tiny_config(tmp_path, mode="fusion", model_size="student")
    candidates = input_candidates(config)
    assert [str(c.root).split("/tiny/")[1] for c in candidates["gat"]] == [
        "supervised/gat/student/with-kd/curriculum", "supervised/gat/student/with-kd/normal",
        "supervised/gat/student/no-kd/curriculum", "supervised/gat/student/no-kd/normal",
    ]
    for layouts in candidates.values():
        for layout in layouts:  # fake complete runs of every candidate
            layout.checkpoint.parent.mkdir(parents=True)
            layout.checkpoint.touch()
            layout.metrics.touch()
    for expected in candidates["gat"][:-1]:
        assert find_inputs(config)["gat"] == expected
        expected.metrics.unlink()  # no longer complete: the next candidate is taken
    assert find_inputs(config)["gat"] == candidates["gat"][-1]
    assert find_inputs(config)["vgae"] == candidates["vgae"][0]
    candidates["vgae"][0].metrics.unlink()
    assert find_inputs(config)["vgae"] == candidates["vgae"][1]
    teacher = tiny_config(tmp_path, mode="fusion")
    assert [str(c.root).split("/tiny/")[1] for c in input_candidates(teacher)["vgae"]] == [
        "unsupervised/vgae/teacher/no-kd/autoencoder"
    ]


def test_fusion_of_students(engine, teacher_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(teacher_root, root)
    for students in (root / "automotive/tiny").glob("*/*/student"):  # other tests may have trained some
        shutil.rmtree(students)
    engine.run(tiny_config(root, mode="autoencoder", model_size="student", max_steps=2))
    engine.run(tiny_config(root, mode="normal", model_size="student", max_steps=2))
    result = engine.run(tiny_config(root, mode="fusion", model_size="student"))
    assert result.layout.root == root / "automotive/tiny/fusion/dqn/student/no-kd/fusion"
    fusion = load_checkpoint(result.checkpoint).extra["fusion"]
    assert "vgae/student/no-kd/autoencoder" in fusion["vgae"]["path"]
    assert "gat/student/no-kd/normal" in fusion["gat"]["path"]
    assert result.metrics["params"] < sum(
        p.numel() for p in build_model(DQN, "teacher", DataInfo(1, 1)).parameters()
    )


def test_inputs_trained_on_other_data_are_refused(engine, fusion_root):
    run = engine.build(engine.plan(tiny_config(fusion_root, mode="fusion", window_stride=25)))
    with pytest.raises(KdcoreError, match="was trained on other data"):
        run.mode.prepare(run)


def test_fusion_with_kd_is_refused_with_the_plans_message_before_any_data_is_read(tmp_path):
    engine = Engine(plugins=[ExplodingPlugin()], load_entry_points=False)
    for kd in ({"use_knowledge_distillation": True},
               {"use_knowledge_distillation": True, "distillation_strategy": "gat-softlabel"}):
        with pytest.raises(IncompatibleError) as caught:
            engine.run(tiny_config(tmp_path, mode="fusion", dataset="exploding", **kd))
        assert str(caught.value) == FUSION_KD_MESSAGE
    assert not any(tmp_path.iterdir())


def test_a_confident_gats_windows_stay_apart_in_the_fused_score():
    """A GAT student+KD put many of a new vehicle's windows above P = 1 − 10⁻⁷, its threshold among
    them: fusion must still tell log-odds 18 from 19 (a float32 P, or p kept 10⁻⁷ off 1, cannot)."""
    probability = torch.sigmoid(torch.tensor([18.0, 19.0], dtype=torch.float64))
    assert probability.float().unique().numel() == 1
    odds = log_odds(probability)
    torch.testing.assert_close(odds, torch.tensor([18.0, 19.0], dtype=torch.float64))
    p = ScoreNormaliser(median=18.0, scale=0.2, threshold=18.5)(odds)
    assert p[0] < 0.5 < p[1]


def test_windows_far_above_an_uncalibrated_threshold_keep_their_order_in_the_fused_score():
    """Before calibration a vehicle's windows can sit tens of spreads above an input's threshold,
    where a float32 sigmoid is exactly 1 for all of them (seed 7, yaris09: fused AUROC 0.93 where
    the inputs ranked at 0.98–0.99)."""
    p = ScoreNormaliser(median=0.0, scale=0.5, threshold=0.0)(torch.tensor([10.0, 12.0], dtype=torch.float64))  # 20 and 24 spreads
    assert p.float().unique().numel() == 1 and p[0] < p[1]
    score = fused_score(torch.tensor([1.0, 1.0]), p, torch.zeros(2, dtype=torch.float64))
    assert score[0] < score[1]


def test_windows_an_input_decides_alone_keep_their_order_beyond_float64s_sigmoid():
    """Before calibration, seed 2's GAT input put yaris09's windows 40-odd spreads above its
    threshold, where the float64 sigmoid is exactly 1: standing alone, it ranked them at 0.90."""
    from kdcore.fusion import alone_score

    normaliser = ScoreNormaliser(median=0.0, scale=0.5, threshold=0.0)
    spreads = normaliser.spreads(torch.tensor([2.0, 3.0, 20.0, 25.0], dtype=torch.float64))  # 4, 6, 40 and 50 spreads
    p, v = torch.sigmoid(spreads), torch.full((4,), 0.1, dtype=torch.float64)
    assert p[2] == p[3] == 1.0, "the sigmoid cannot tell them apart"
    alpha = torch.tensor([1.0, 0.5, 1.0, 1.0])
    mixed = fused_score(alpha, p, v)
    score = alone_score(mixed, alpha, spreads, torch.full((4,), -10.0, dtype=torch.float64), margin=8.0)
    assert score[1] == mixed[1] and score[0] == p[0], "below the margin, or mixed: the fused score as it was"
    assert mixed[1] < 0.9 < score[2] < score[3] < 1.0, "beyond it: apart, on the same side of any threshold below it"
    at_margin = alone_score(torch.sigmoid(torch.tensor([8.0], dtype=torch.float64)), torch.ones(1), torch.tensor([8.0]),
                            torch.zeros(1), margin=8.0)
    assert at_margin == pytest.approx(float(torch.sigmoid(torch.tensor(8.0))))  # it meets the sigmoid there
    assert torch.equal(alone_score(mixed, alpha, spreads, spreads, margin=None), mixed), "no margin: as it was"


def test_reward_favours_right_decisions_and_balances_classes():
    labels = torch.tensor([0, 0, 0, 1])
    counts = torch.bincount(labels, minlength=2)
    weights = (counts.sum() / (2 * counts)).float()
    right = rewards(torch.tensor([0.1, 0.1, 0.1, 0.9]), labels, weights, margin_weight=0.5)
    wrong = rewards(torch.tensor([0.9, 0.9, 0.9, 0.1]), labels, weights, margin_weight=0.5)
    assert torch.all(right > 0) and torch.all(wrong < 0)
    assert right[3] == 3 * right[0]  # the rare class weighs three times as much
    assert right[:3].sum() == right[3]  # so both classes weigh the same in total
    surer = rewards(torch.tensor([0.0]), torch.tensor([0]), weights, margin_weight=0.5)
    assert surer > right[0]  # a larger margin on the right side earns more


def test_an_alerting_batch_is_attributed_by_the_gat_once(engine, fusion_root, fusion_run, monkeypatch):
    """Suspects and class cues both read the GAT's node scores: one backward pass per batch."""
    predictor, _ = FusionPredictor.from_checkpoint(engine, fusion_run.checkpoint)
    judge = predictor.alert_judge(load_checkpoint(load_checkpoint(fusion_run.checkpoint).extra["fusion"]["gat"]["path"]).extra, None)
    calls = []
    attribute = predictor._classifier.node_scores
    monkeypatch.setattr(predictor._classifier, "node_scores", lambda model, batch: calls.append(batch) or attribute(model, batch))
    run = engine.build(engine.plan(tiny_config(fusion_root, mode="fusion")))
    batch = next(iter(run.datamodule.loader(next(iter(run.datamodule.test_sets.values())))))
    suspects = judge.node_scores(batch)
    judge.class_node_scores(batch)
    assert len(calls) == 1 and suspects.shape == (batch.num_nodes,)
    judge.class_node_scores(next(iter(run.datamodule.loader(run.datamodule.val_set))))
    assert len(calls) == 2, "another batch is attributed anew"


def test_threshold_is_fitted_at_the_target_false_positive_rate():
    normal = torch.arange(1, 101, dtype=torch.float32)  # 1 .. 100
    threshold = threshold_at_fpr(normal, 0.05)
    assert float((normal >= threshold).float().mean()) == pytest.approx(0.05, abs=0.011)
    assert threshold_at_fpr(normal, 0.0) == 100.0




def test_calibrating_fusion_calibrates_its_inputs_and_its_fused_threshold(engine, fusion_run, tmp_path):
    clean = tmp_path / "clean.csv"
    write_csv(tiny_capture(np.random.default_rng(5), 2000), clean)
    out = tmp_path / "fusion-calibrated.pth"
    record = calibrate(fusion_run.checkpoint, [clean], out, target_fpr=0.05, engine=engine)
    assert "input normalisations" in record["fitted"] and "inputs" in record["fitted"]
    fusion = load_checkpoint(out).extra["fusion"]
    for name in ("vgae", "gat"):
        path = tmp_path / f"fusion-calibrated-{name}.pth"
        assert fusion[name]["path"] == str(path)
        assert load_checkpoint(path).extra["calibration"]["frames"] == 2000
    predictor, threshold = FusionPredictor.from_checkpoint(engine, out)
    assert predictor.sure_margin == load_checkpoint(fusion_run.checkpoint).extra["fusion"]["sure_margin"] == 8.0, \
        "the margin is in the inputs' own spreads: it carries to the calibrated vehicle"
    detector = Detector(out, engine=engine)
    assert threshold == record["threshold"] == detector.threshold == max(record["threshold_with_headroom"], 0.5)
    gat = load_checkpoint(tmp_path / "fusion-calibrated-gat.pth").extra  # the fused detector's classes: its calibrated GAT's
    assert detector.judge.classes.to_dict() == gat["attack_classes"]
    assert gat["attack_classes"]["radius_scale"] == gat["calibration"]["class_radius_scale"] >= 1.0
    graphs = detector.preprocessing.apply(build_window_graphs(node_keys(read_capture(clean), "can_id"), detector.window, detector.window))
    batch = next(iter(DataLoader(graphs, batch_size=8)))  # the classes read their cues from the GAT's node scores, as fitted
    assert torch.equal(detector.judge.class_node_scores(batch), predictor._classifier.node_scores(predictor.gat, batch))
    assert not torch.equal(detector.judge.class_node_scores(batch), detector.judge.node_scores(batch))
    scores = detector.score(DataLoader(graphs, batch_size=64))
    assert float((scores >= threshold).float().mean()) <= 0.05 + 1 / len(scores)
    assert detector.spread == ScoreSpread.fit(scores, probabilities=True)  # alerts' margins in this vehicle's spreads


def test_the_fused_threshold_is_the_lowest_that_flags_the_best_windows():
    from kdcore.metrics import best_f1_threshold

    scores, labels = torch.tensor([0.1, 0.2, 0.3, 0.8, 0.9]), torch.tensor([0, 0, 0, 1, 1])
    threshold = best_f1_threshold(scores, labels, target_fpr=0.0)
    assert 0.3 < threshold < 0.31, "the gap's lower end: every attack flagged, no normal window"
    assert ((scores >= threshold) == labels.bool()).all()
    overlapping = torch.tensor([0.1, 0.85, 0.3, 0.8, 0.9])  # a normal window among the attacks
    threshold = best_f1_threshold(overlapping, labels, target_fpr=0.0)
    assert 0.85 < threshold <= 0.9, "no normal window flagged at target_fpr 0"
