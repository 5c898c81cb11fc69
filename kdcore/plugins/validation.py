"""The built-in veto: a mode's KD support, a strategy's required outputs, scale-out, and the
teacher-output cache with profile dropout."""

from __future__ import annotations

from kdcore.contracts import KDSupport
from kdcore.hookspecs import hookimpl

FUSION_KD_MESSAGE = (
    "Knowledge distillation is not supported for fusion mode. "
    "The DQN agent uses already-distilled VGAE and GAT models."
)


def forbidden_message(mode_name: str) -> str:
    """The plan's exact message for fusion; the same sentence shape for any other mode."""
    if mode_name == "fusion":
        return FUSION_KD_MESSAGE
    return f"Knowledge distillation is not supported for {mode_name} mode."


@hookimpl
def kdcore_validate_combination(mode, strategy, config):
    if not mode.distributed and config.devices * config.num_nodes > 1:
        return f"mode {mode.name!r} trains in one process; run it with --devices 1 --num-nodes 1"
    kd_on = strategy is not None or config.use_knowledge_distillation
    if kd_on and mode.kd_support is KDSupport.FORBIDDEN:
        return forbidden_message(mode.name)
    if not kd_on and mode.kd_support is KDSupport.REQUIRED:
        return f"mode {mode.name!r} requires knowledge distillation; add --kd NAME or --distillation with-kd"
    if strategy is None:
        return None
    missing = [name for name in strategy.requires if name not in mode.provides]
    if missing:
        return (
            f"strategy {strategy.name!r} needs outputs {', '.join(missing)} that mode {mode.name!r} "
            f"does not provide (it provides: {', '.join(mode.provides) or 'none'})"
        )
    return None
