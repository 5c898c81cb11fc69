"""Commands that only read data start without the training stack.

Each command runs in a fresh interpreter (what a user's shell starts), which then reports the
heavy modules it imported. The speed itself is measured by ``benchmarks/bench_startup.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from kdcore.data.formats.writers import write_csv

from conftest import tiny_capture

HEAVY = ("torch", "lightning", "torch_geometric")

PROBE = """
import json, sys
from kdcore.cli import main
sys.argv = ["kdcore", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit as stop:
    code = stop.code
else:
    code = 0
heavy = sorted(name for name in sys.modules if name.split(".")[0] in {heavy!r})
print("\\n" + json.dumps({{"code": code, "heavy": heavy}}), file=sys.stderr)
"""


def heavy_modules(*arguments: str) -> list[str]:
    """The heavy modules a ``kdcore`` command imported; it must also succeed."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=set(HEAVY)), json.dumps(arguments)],
        capture_output=True, text=True, timeout=120,
    )
    report = json.loads(result.stderr.strip().splitlines()[-1])
    assert report["code"] in (0, None), result.stderr
    return report["heavy"]


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    path = tmp_path_factory.mktemp("startup") / "drive.csv"
    write_csv(tiny_capture(np.random.default_rng(0), 2000, "dos"), path)
    return path


@pytest.mark.parametrize("arguments", [["--help"], ["plugins", "--json"], ["list"], ["list", "--compat"], ["data", "list", "--json"]])
def test_listing_commands_import_no_training_stack(arguments):
    assert heavy_modules(*arguments) == []


def test_data_inspect_imports_no_training_stack(capture):
    assert heavy_modules("data", "inspect", str(capture), "--json") == []


def test_data_build_needs_no_torch(capture, tmp_path):
    assert heavy_modules("data", "build", str(capture), "--window", "50", "--cache-dir", str(tmp_path / "cache"), "--json") == []
    assert any((tmp_path / "cache").iterdir())
