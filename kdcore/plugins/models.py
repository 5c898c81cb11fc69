"""Registers the built-in models, by reference: torch is imported only when one is built."""

from kdcore.hookspecs import hookimpl
from kdcore.registry import Lazy


@hookimpl
def kdcore_register_models(register):
    register(Lazy("gat", "kdcore.models.gat:GAT", "Graph attention classifier with jumping knowledge"))
    register(Lazy("vgae", "kdcore.models.vgae:VGAE", "Variational graph autoencoder"))
    register(Lazy("dqn", "kdcore.models.dqn:DQN", "DQN agent that fuses the VGAE and GAT scores"))
