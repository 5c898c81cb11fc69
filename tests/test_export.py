"""``kdcore export``: ONNX and TorchScript files that compute what PyTorch computes, or no file at all."""

import json

import onnxruntime
import pytest
import torch
from typer.testing import CliRunner

import kdcore.export
from kdcore.cli import app
from kdcore.errors import KdcoreError
from kdcore.export import export_checkpoint, sample_windows
from kdcore.checkpoint import load_checkpoint

MODELS = {
    "gat": "automotive/tiny/supervised/gat/teacher/no-kd/normal/models/gat_normal.pth",
    "vgae": "automotive/tiny/unsupervised/vgae/teacher/no-kd/autoencoder/models/vgae_autoencoder.pth",
}


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_export_matches_pytorch(engine, teacher_root, tmp_path, model, format):
    out = tmp_path / f"{model}.{format}"
    report = export_checkpoint(teacher_root / MODELS[model], format, out, engine=engine)
    assert report.path == out and out.stat().st_size == report.bytes > 0
    assert report.max_abs_diff <= kdcore.export.TOLERANCE and report.windows > 1
    assert [p.name for p in tmp_path.iterdir()] == [out.name], "no staging files left behind"


def test_onnx_file_runs_in_onnxruntime_on_windows_of_any_size(engine, teacher_root, tmp_path):
    path = teacher_root / MODELS["gat"]
    export_checkpoint(path, "onnx", tmp_path / "gat.onnx", engine=engine)
    session = onnxruntime.InferenceSession(str(tmp_path / "gat.onnx"), providers=["CPUExecutionProvider"])
    model = engine.load_model(load_checkpoint(path), path)
    windows = sample_windows(load_checkpoint(path), count=5)
    assert len({w[0].shape[0] for w in windows}) > 1, "windows of different node counts"
    for x, id_token, edge_index in windows:
        (logits,) = session.run(None, {"x": x.numpy(), "id_token": id_token.numpy(), "edge_index": edge_index.numpy()})
        with torch.no_grad():
            expected = model(x, id_token, edge_index, torch.zeros_like(id_token))
        assert torch.allclose(torch.from_numpy(logits), expected, atol=1e-4)


def test_a_parity_failure_leaves_no_file(engine, teacher_root, tmp_path, monkeypatch):
    monkeypatch.setattr(kdcore.export, "TOLERANCE", -1.0)
    with pytest.raises(KdcoreError, match="differs from PyTorch"):
        export_checkpoint(teacher_root / MODELS["gat"], "torchscript", tmp_path / "gat.pt", engine=engine)
    assert list(tmp_path.iterdir()) == []


def test_export_command_and_its_errors(teacher_root, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(teacher_root / MODELS["vgae"]), "--format", "torchscript", "--out", str(tmp_path / "v.pt"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["max_abs_diff"] <= kdcore.export.TOLERANCE
    unknown = runner.invoke(app, ["export", str(teacher_root / MODELS["gat"]), "--format", "tflite", "--out", str(tmp_path / "x")])
    assert unknown.exit_code == 2 and "unknown export format 'tflite'" in unknown.stderr
    missing = runner.invoke(app, ["export", str(tmp_path / "none.pth"), "--out", str(tmp_path / "x.onnx")])
    assert missing.exit_code == 2 and "checkpoint not found" in missing.stderr


def test_the_fused_detector_exports_to_onnx_and_torchscript(engine, teacher_root, tmp_path):
    import shutil

    from kdcore.fusion import FusionPredictor
    from torch_geometric.data import Batch, Data

    from conftest import tiny_config

    root = tmp_path / "root"
    shutil.copytree(teacher_root, root)
    fusion = engine.run(tiny_config(root, mode="fusion"))
    predictor, _ = FusionPredictor.from_checkpoint(engine, fusion.checkpoint)
    windows = sample_windows(load_checkpoint(fusion.checkpoint), count=6)
    batch = Batch.from_data_list([Data(x=x, id_token=t, edge_index=e) for x, t, e in windows])
    expected = predictor.scores([batch])

    for format in ("onnx", "torchscript"):
        report = export_checkpoint(fusion.checkpoint, format, tmp_path / f"fused.{format}", engine=engine)
        assert report.max_abs_diff <= kdcore.export.TOLERANCE
    session = onnxruntime.InferenceSession(str(tmp_path / "fused.onnx"), providers=["CPUExecutionProvider"])
    loaded = torch.jit.load(str(tmp_path / "fused.torchscript"))
    for exported in (
        lambda x, t, e: torch.from_numpy(session.run(None, {"x": x.numpy(), "id_token": t.numpy(), "edge_index": e.numpy()})[0]),
        lambda x, t, e: loaded(x, t, e)[0],
    ):
        got = torch.cat([exported(*window) for window in windows])
        assert torch.allclose(got, expected, atol=1e-5), (got, expected)
