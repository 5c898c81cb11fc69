import os
import pickle

import pytest
import torch

from kdcore.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from kdcore.errors import CheckpointError


def small_checkpoint():
    return Checkpoint(model="gat", hparams={"hidden": 4}, state_dict={"w": torch.arange(6.0).view(2, 3)},
                      config={"mode": "normal"}, extra={"threshold": 0.5})


def test_round_trip(tmp_path):
    path = tmp_path / "models" / "gat_normal.pth"
    save_checkpoint(path, small_checkpoint())
    loaded = load_checkpoint(path)
    assert (loaded.model, loaded.hparams, loaded.config, loaded.extra) == ("gat", {"hidden": 4}, {"mode": "normal"}, {"threshold": 0.5})
    assert torch.equal(loaded.state_dict["w"], torch.arange(6.0).view(2, 3))
    assert [p.name for p in path.parent.iterdir()] == ["gat_normal.pth"], "no temporary file is left behind"


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickled_code_is_refused_and_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"format": "kdcore-checkpoint", "payload": RunsCode()}, path)
    with pytest.raises(CheckpointError, match="evil.pth: refused: it holds pickled objects other than tensors and plain data"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


def test_plain_pickle_file_is_refused(tmp_path):
    path = tmp_path / "plain.pth"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="plain.pth: not a PyTorch checkpoint"):
        load_checkpoint(path)


def test_truncated_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "cut.pth"
    save_checkpoint(path, small_checkpoint())
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cut.pth: not a (PyTorch|readable) checkpoint"):
        load_checkpoint(path)


def test_foreign_torch_file_is_not_a_kdcore_checkpoint(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="weights.pth: not a kdcore checkpoint"):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "absent.pth")


def test_weights_that_do_not_fit_the_model_name_the_file(engine, tmp_path):
    checkpoint = Checkpoint(model="gat", hparams=dict(num_node_features=11, num_ids=5), state_dict={"w": torch.zeros(1)})
    save_checkpoint(tmp_path / "bad.pth", checkpoint)
    with pytest.raises(CheckpointError, match="bad.pth: weights do not fit the model"):
        engine.load_model(load_checkpoint(tmp_path / "bad.pth"), tmp_path / "bad.pth")


def test_unknown_model_in_checkpoint(engine, tmp_path):
    save_checkpoint(tmp_path / "m.pth", Checkpoint(model="transformer", hparams={}, state_dict={}))
    with pytest.raises(CheckpointError, match="m.pth: unknown model 'transformer'"):
        engine.load_model(load_checkpoint(tmp_path / "m.pth"), tmp_path / "m.pth")
