"""Registers the built-in models."""

from kdcore.hookspecs import hookimpl
from kdcore.models import GAT, VGAE


@hookimpl
def kdcore_register_models(register):
    register(GAT)
    register(VGAE)
