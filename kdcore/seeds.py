"""A study over several seeds, summed up: mean ± std of every metric, and whether KD's gain is
more than seed-to-seed noise.

A KD result is a difference of a few F1 points, and one seed cannot tell a real gain from noise.
``across_seeds`` groups the runs of one dataset, model, size, mode and KD strategy that differ only
in their seed. ``kd_gains`` pairs each student + KD with the plain student of the same seed (same
data, same start) and tests the paired gains with an exact sign-flip permutation test: under "KD
changes nothing" each seed's gain is as likely positive as negative, so the p-value is the share
of the 2^n sign patterns whose mean gain is at least as far from 0 as the one measured. It needs
no assumption about the gains' distribution; with n seeds the smallest p-value it can give is
2^(1 − n), so telling a gain from noise at 5 % takes at least 6 seeds. numpy only.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import numpy as np

SUMMED = ("accuracy", "precision", "recall", "f1", "auroc", "fpr", "latency_ms_per_graph")
PER_SET = ("f1", "fpr", "auroc")
SIGNIFICANCE = 0.05


def _spread(values: Iterable[float]) -> dict[str, float | int]:
    """Mean, sample standard deviation (0 for one value) and count of the finite values."""
    values = np.asarray([value for value in values if value is not None and np.isfinite(value)], dtype=float)
    if not len(values):
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0, "n": len(values)}


def across_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per dataset, model, size, mode and KD strategy run with two seeds or more: the
    seeds, and mean ± std of every metric, overall and per test set."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("seed") is not None:
            groups.setdefault((row["dataset"], row["model"], row["model_size"], row["mode"], row["kd"]), []).append(row)
    summary = []
    for (dataset, model, size, mode, kd), group in groups.items():
        seeds = sorted({row["seed"] for row in group})
        if len(seeds) < 2:
            continue
        test_sets = sorted({name for row in group for name in row.get("test_sets", {})})
        summary.append({
            "dataset": dataset, "model": model, "model_size": size, "mode": mode, "kd": kd, "seeds": seeds,
            **{key: _spread(row.get(key) for row in group) for key in SUMMED},
            "test_sets": {name: {key: _spread(row["test_sets"][name].get(key) for row in group if name in row.get("test_sets", {}))
                                 for key in PER_SET} for name in test_sets},
        })
    return summary


def sign_flip_p_value(gains: list[float]) -> float:
    """Two-sided exact p-value of the paired gains' mean under random signs."""
    gains = np.asarray(gains, dtype=float)
    observed = abs(gains.mean())
    means = [abs((gains * np.asarray(signs)).mean()) for signs in itertools.product((1.0, -1.0), repeat=len(gains))]
    return float(np.mean([mean >= observed - 1e-12 for mean in means]))


def kd_gains(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset, model, mode and KD strategy: F1(student + KD) − F1(plain student) seed by seed,
    their mean ± std, the sign-flip p-value and whether the gain exceeds the seed-to-seed noise."""
    plain = {(r["dataset"], r["model"], r["mode"], r["seed"]): r["f1"] for r in rows
             if r["model_size"] == "student" and r["kd"] == "-" and r.get("seed") is not None}
    paired: dict[tuple, dict[int, float]] = {}
    for row in rows:
        key = (row["dataset"], row["model"], row["mode"], row.get("seed"))
        if row["model_size"] == "student" and row["kd"] != "-" and key in plain:
            paired.setdefault((row["dataset"], row["model"], row["mode"], row["kd"]), {})[row["seed"]] = row["f1"] - plain[key]
    results = []
    for (dataset, model, mode, kd), by_seed in paired.items():
        if len(by_seed) < 2:
            continue
        gains = [by_seed[seed] for seed in sorted(by_seed)]
        p_value = sign_flip_p_value(gains)
        results.append({"dataset": dataset, "model": model, "mode": mode, "kd": kd, "seeds": sorted(by_seed), "gains": gains,
                        **_spread(gains), "p_value": p_value, "exceeds_noise": p_value < SIGNIFICANCE})
    return results
