"""Graph models: GAT classifier and VGAE autoencoder, each in teacher and student sizes.

A kdcore model is a ``torch.nn.Module`` with a registered ``name``, a ``sizes`` table keyed by
``model_size``, and ``hparams``: the constructor arguments that rebuild it from a checkpoint.
"""

from kdcore.models.gat import GAT
from kdcore.models.vgae import VGAE

__all__ = ["GAT", "VGAE", "build_model"]


def build_model(model_class, model_size: str, info):
    """A model of ``model_class`` in the named size for data described by ``info``."""
    return model_class(
        num_node_features=info.num_node_features,
        num_ids=info.num_ids,
        num_classes=info.num_classes,
        **model_class.sizes[model_size],
    )
