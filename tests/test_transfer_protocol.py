"""The transfer benchmark's protocol (``benchmarks/bench_transfer.py``): no capture a model trains on
is one it is tested or calibrated on, whichever vehicle trains."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VEHICLES_ROOT = ROOT.parent / "shared" / "data" / "real" / "vehicles"


@pytest.fixture(scope="module")
def bench():
    with pytest.MonkeyPatch.context() as patch:  # the script sets OMP_NUM_THREADS for itself; not for the tests after
        patch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
        spec = importlib.util.spec_from_file_location("bench_transfer", ROOT / "benchmarks" / "bench_transfer.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def trained_on(plan: dict) -> set[str]:
    return {name for captures in plan.get("train", {}).values() for files in captures.values() for name in files}


def test_no_vehicle_is_tested_or_calibrated_on_a_capture_it_trains_on(bench):
    assert bench.TRAIN_VEHICLES == ["camaro", "civic8th"]
    for vehicle, plan in bench.VEHICLES.items():
        tests, calibration = set(plan["tests"].values()), set(plan["calibration"])
        assert len(tests) == len(plan["tests"]) == 4, vehicle  # each attack in a capture of its own
        assert not tests & calibration, vehicle
        assert not tests & trained_on(plan), vehicle


@pytest.mark.skipif(not VEHICLES_ROOT.is_dir(), reason="../shared/data/real is not present: the benchmark's captures need the shared data folder")
def test_every_capture_the_protocol_names_is_there(bench):
    for vehicle, plan in bench.VEHICLES.items():
        for name in {*trained_on(plan), *plan["tests"].values(), *plan["calibration"]}:
            assert (VEHICLES_ROOT / vehicle / name).is_file(), f"{vehicle}/{name}"
