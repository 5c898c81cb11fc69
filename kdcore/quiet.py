"""Keep a terminal for kdcore's own messages, in the command-line process and in Ray workers."""

from __future__ import annotations

import logging
import warnings


def quiet_libraries() -> None:
    """Lightning's banners and tips are noise in kdcore's output: show only their errors."""
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING)
    # Lightning resets its package loggers to INFO when imported (later, where a model is built);
    # the loggers that its messages come from keep the level set here.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # "Creating initial MLflow database tables..."
    warnings.filterwarnings("ignore", module=r"lightning(\.|$)")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
