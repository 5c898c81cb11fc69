"""Registers the built-in models."""

from kdcore.hookspecs import hookimpl
from kdcore.models import GAT, VGAE
from kdcore.models.dqn import DQN


@hookimpl
def kdcore_register_models(register):
    register(GAT)
    register(VGAE)
    register(DQN)
