"""From CAN traffic to batches of PyG graphs."""

from kdcore.data.module import DataInfo, GraphDataModule

__all__ = ["DataInfo", "GraphDataModule"]
