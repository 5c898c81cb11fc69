"""Registers the built-in datasets: the synthetic default, the six standard datasets in the
can-train-and-test layout, ``captures`` for any capture file or folder, and the real attack
collections (``road``, ``j1939``, and ``attack-captures`` for any folder of attack captures)."""

from kdcore.data.captures import STANDARD_DATASETS, CaptureDataset
from kdcore.data.real import AttackCapturesDataset, J1939Dataset, RoadDataset
from kdcore.data.synthetic import SyntheticCAN
from kdcore.hookspecs import hookimpl


@hookimpl
def kdcore_register_datasets(register):
    register(SyntheticCAN)
    register(CaptureDataset)
    register(AttackCapturesDataset)
    register(RoadDataset)
    register(J1939Dataset)
    for dataset in STANDARD_DATASETS:
        register(dataset)
