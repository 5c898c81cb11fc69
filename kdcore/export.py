"""``kdcore export``: a trained GAT, VGAE or fused detector as ONNX or TorchScript, checked against PyTorch.

The exported graph scores one window at a time (what detection on a bus does): inputs are the
window's node features ``x``, CAN-ID tokens ``id_token`` and ``edge_index``, with any number of
nodes and edges. Parity is checked on real-looking windows — synthetic traffic cut and
preprocessed exactly as the model's own training data (the vocabulary and scaling saved in its
checkpoint) — and the file is only put in place when every output matches within tolerance.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import attrs
import numpy as np
import torch
from torch import nn

from kdcore.checkpoint import load_checkpoint
from kdcore.errors import KdcoreError

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-4
PARITY_WINDOWS = 20


@attrs.frozen
class ExportReport:
    path: Path
    format: str
    bytes: int
    max_abs_diff: float
    windows: int


class OneWindow(nn.Module):
    """The model on a single window: no batch vector, outputs as a flat tuple of tensors."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()
        self.vgae = model.name == "vgae"

    def forward(self, x: torch.Tensor, id_token: torch.Tensor, edge_index: torch.Tensor):
        batch = torch.zeros_like(id_token)
        if self.vgae:
            cont_out, canid_logits, neighbor_logits, z, _ = self.model(x, id_token, edge_index, batch)
            return cont_out, canid_logits, neighbor_logits, z
        return (self.model(x, id_token, edge_index, batch),)


class FusedWindow(nn.Module):
    """The fused detector on a single window: VGAE score and GAT probability, normalised and
    weighed by the agent's chosen α, an input beyond its sure margin standing alone (or one input
    alone, where the fusion defers to it). Outputs
    ``(score, p_gat, v_vgae, alpha)`` (``p_gat`` and ``v_vgae`` normalised); the decision is
    ``score >= threshold`` (saved in the fusion checkpoint)."""

    def __init__(self, predictor):
        from kdcore.fusion import DEFERRED_ALPHA, sure_level

        super().__init__()
        self.vgae, self.gat, self.dqn = predictor.vgae.eval(), predictor.gat.eval(), predictor.dqn.eval()
        self.normalisers = predictor.normalisers
        self.register_buffer("actions", predictor.actions.clone())
        self.deferred_alpha = None if predictor.deferred_to is None else DEFERRED_ALPHA[predictor.deferred_to]
        self.sure_margin = predictor.sure_margin
        self.sure = sure_level(predictor.sure_margin)

    def forward(self, x: torch.Tensor, id_token: torch.Tensor, edge_index: torch.Tensor):
        from kdcore.fusion import alone_score, fused_score, fusion_state, standing_alpha
        from kdcore.metrics import log_odds
        from kdcore.plugins.modes.autoencoder import graph_scores

        batch = torch.zeros_like(id_token)
        raw = graph_scores({"recon": self.vgae(x, id_token, edge_index, batch)[0]}, x, self.vgae.error_scale, batch, 1)
        v_spreads = self.normalisers["vgae"].spreads(raw)
        p_spreads = self.normalisers["gat"].spreads(log_odds(torch.softmax(self.gat(x, id_token, edge_index, batch).float(), -1)[:, 1]))
        p, v = torch.sigmoid(p_spreads), torch.sigmoid(v_spreads)
        if self.deferred_alpha is None:
            alpha = standing_alpha(self.actions[self.dqn(fusion_state(p, v)).argmax(-1)], p, v, self.sure)
        else:
            alpha = torch.full_like(p, self.deferred_alpha)
        return alone_score(fused_score(alpha, p, v), alpha, p_spreads, v_spreads, self.sure_margin), p, v, alpha


INPUTS = ("x", "id_token", "edge_index")


def sample_windows(checkpoint, count: int = PARITY_WINDOWS) -> list[tuple[torch.Tensor, ...]]:
    """Windows of synthetic traffic, preprocessed as the model's training data was."""
    from kdcore.data.preprocess import Preprocessing
    from kdcore.data.traffic import generate_traffic, inject
    from kdcore.data.windows import build_window_graphs

    data = checkpoint.extra.get("data", {})
    if "preprocessing" not in data:
        raise KdcoreError("the checkpoint holds no data preprocessing (vocabulary and scaling) to build sample windows with")
    window = int(data["window_size"])
    table = inject(generate_traffic(max(5.0, count * window / 1000), seed=0), "fuzzy", seed=0)
    graphs = Preprocessing.from_dict(data["preprocessing"]).apply(build_window_graphs(table, window, window))
    picks = np.linspace(0, len(graphs) - 1, min(count, len(graphs))).astype(int)
    return [(graphs[i].x, graphs[i].id_token, graphs[i].edge_index) for i in picks]


def export_checkpoint(path: str | Path, format: str, out: str | Path, engine=None) -> ExportReport:
    """Export, check parity on sample windows, then move the file into place."""
    if format not in FORMATS:
        raise KdcoreError(f"unknown export format {format!r}; known: {', '.join(FORMATS)}")
    from kdcore.engine import Engine

    path, out = Path(path), Path(out)
    engine = engine or Engine()
    checkpoint = load_checkpoint(path)
    if checkpoint.model == "dqn":
        from kdcore.fusion import FusionPredictor

        module = FusedWindow(FusionPredictor.from_checkpoint(engine, path)[0])
    elif checkpoint.model in ("gat", "vgae"):
        from kdcore.plugins.modes.autoencoder import check_score

        check_score(checkpoint, path)
        module = OneWindow(engine.load_model(checkpoint, path))
    else:
        raise KdcoreError(f"{path}: export supports gat, vgae and fusion (dqn) checkpoints, not {checkpoint.model!r}")
    module.eval()  # the wrapper too: exporters put back the mode they found, recursively, models included
    windows = sample_windows(checkpoint)
    with torch.no_grad():
        expected = [module(*window) for window in windows]

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as staging:
        staged = Path(staging) / out.name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = _export_onnx(module, windows[0], staged) if format == "onnx" else _export_torchscript(module, windows[0], staged)
            outputs = [run(window) for window in windows]
        difference = max(
            float(np.abs(np.asarray(got) - want.numpy()).max()) if want.numel() else 0.0
            for got_all, want_all in zip(outputs, expected)
            for got, want in zip(got_all, want_all)
        )
        if not difference <= TOLERANCE:
            raise KdcoreError(f"{out}: the exported model differs from PyTorch by {difference:.3g} (tolerance {TOLERANCE})")
        staged.replace(out)
    return ExportReport(path=out, format=format, bytes=out.stat().st_size, max_abs_diff=difference, windows=len(windows))


def _export_onnx(module: nn.Module, example, path: Path):
    try:
        import onnxruntime
    except ImportError:
        raise KdcoreError("ONNX export needs onnx and onnxruntime: pip install 'kdcore[export]'") from None
    dynamic = {"x": {0: "nodes"}, "id_token": {0: "nodes"}, "edge_index": {1: "edges"}}
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    # torch.export (dynamo=True) cannot trace PyG's data-dependent self-loop handling; the
    # TorchScript-based exporter can.
    torch.onnx.export(module, example, str(path), input_names=list(INPUTS), dynamic_axes=dynamic, dynamo=False)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # shape-inference notes about dynamic axes are not problems
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda window: session.run(None, {name: tensor.numpy() for name, tensor in zip(INPUTS, window)})


def _export_torchscript(module: nn.Module, example, path: Path):
    traced = torch.jit.trace(module, example, check_trace=False)
    traced.save(str(path))
    loaded = torch.jit.load(str(path))
    return lambda window: [tensor.detach().numpy() for tensor in loaded(*window)]
