"""Registers the built-in datasets: the synthetic default, the six standard datasets in the
can-train-and-test layout, and ``captures`` for any capture file or folder."""

from kdcore.data.captures import STANDARD_DATASETS, CaptureDataset
from kdcore.data.synthetic import SyntheticCAN
from kdcore.hookspecs import hookimpl


@hookimpl
def kdcore_register_datasets(register):
    register(SyntheticCAN)
    register(CaptureDataset)
    for dataset in STANDARD_DATASETS:
        register(dataset)
