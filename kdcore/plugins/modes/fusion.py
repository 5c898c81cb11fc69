"""``fusion``: a DQN agent fusing VGAE and GAT scores. It forbids KD: its inputs are already distilled."""

from __future__ import annotations

from kdcore.contracts import KDSupport, TrainingMode
from kdcore.errors import KdcoreError
from kdcore.hookspecs import hookimpl


class FusionMode(TrainingMode):
    name = "fusion"
    kd_support = KDSupport.FORBIDDEN
    provides = ()
    default_strategy = None
    model = "dqn"
    learning_type = "fusion"

    def check(self, config):
        raise KdcoreError("fusion mode (the DQN agent) is declared but cannot train yet: it arrives with issue #6")


@hookimpl
def kdcore_register_modes(register):
    register(FusionMode)
