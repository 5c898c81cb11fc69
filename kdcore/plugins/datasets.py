"""Registers the built-in datasets."""

from kdcore.data.synthetic import SyntheticCAN
from kdcore.hookspecs import hookimpl


@hookimpl
def kdcore_register_datasets(register):
    register(SyntheticCAN)
