"""A GAT of several networks (``members``): a deep ensemble that judges by their mean."""

import pytest
import torch
import torch.nn.functional as F

from kdcore.models import GAT
from kdcore.plugins.modes.normal import NormalMode


def gat(members, seed=0):
    torch.manual_seed(seed)
    return GAT(num_node_features=6, num_ids=5, hidden_channels=8, heads=2, num_layers=2, embedding_dim=3,
               activation="elu", members=members).eval()


def windows():
    torch.manual_seed(1)
    x = torch.randn(7, 6)
    id_token = torch.tensor([0, 1, 2, 3, 4, 1, 2])
    edge_index = torch.tensor([[0, 1, 2, 4, 5], [1, 2, 3, 5, 6]])
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    return x, id_token, edge_index, batch


class Batch:
    def __init__(self, x, id_token, edge_index, batch, y):
        self.x, self.id_token, self.edge_index, self.batch, self.y = x, id_token, edge_index, batch, y


def test_the_windows_logits_are_the_mean_of_networks_initialised_apart():
    model, inputs = gat(3), windows()
    with torch.no_grad():
        members = model.member_logits(*inputs)
        logits = model(*inputs)
    assert members.shape == (3, 2, 2)
    torch.testing.assert_close(logits, members.mean(0))
    assert not torch.allclose(members[0], members[1]) and not torch.allclose(members[1], members[2])
    assert model.embed(*inputs).shape == (2, 3 * 8 * 2), "the members' pooled nodes side by side"


def test_only_the_id_embedding_is_shared():
    one, three = gat(1), gat(3)
    per_network = sum(p.numel() for p in one.members[0].parameters())
    assert sum(p.numel() for p in three.parameters()) == one.id_embedding.weight.numel() + 3 * per_network


def test_each_network_is_trained_on_its_own_loss_not_on_the_mean():
    """The loss is the mean of each network's cross-entropy, so a network's gradient is what it
    would be trained alone (fitted on the mean, the networks would make up for each other)."""
    model, (x, id_token, edge_index, batch) = gat(2), windows()  # eval: no dropout, the same forward twice
    mode, y = NormalMode(), torch.tensor([1, 0])
    outputs = mode.outputs(model, Batch(x, id_token, edge_index, batch, y))
    loss = mode.task_loss(outputs, Batch(x, id_token, edge_index, batch, y))
    torch.testing.assert_close(loss, torch.stack([F.cross_entropy(member, y) for member in outputs["member_logits"]]).mean())
    assert not torch.isclose(loss, F.cross_entropy(outputs["logits"], y))
    first = list(model.members[0].parameters())
    together = torch.autograd.grad(loss, first)
    alone = torch.autograd.grad(F.cross_entropy(model.member_logits(x, id_token, edge_index, batch)[0], y) / 2, first)
    for got, want in zip(together, alone):
        torch.testing.assert_close(got, want)


def test_a_gat_saved_before_members_loads_as_its_first_network():
    """Its weights were at the top level (``convs.*``, ``classifier.*``)."""
    model, inputs = gat(1), windows()
    old = {name.replace("members.0.", ""): tensor for name, tensor in model.state_dict().items()}
    assert "convs.0.lin.weight" in old and "classifier.3.bias" in old
    loaded = GAT(**{**model.hparams, "members": 1})
    loaded.load_state_dict(old)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(*inputs), model(*inputs))


def test_members_below_one_are_refused():
    with pytest.raises(ValueError, match="members must be at least 1"):
        gat(0)


def test_a_model_of_one_network_without_member_logits_trains_in_normal_mode_as_before():
    """A third-party model only has to map ``(x, id_token, edge_index, batch)`` to logits (docs/hooks.md)."""
    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.out = torch.nn.Linear(6, 2)

        def forward(self, x, id_token, edge_index, batch):
            return self.out(torch.zeros(int(batch.max()) + 1, 6).index_add_(0, batch, x))

    torch.manual_seed(0)
    model, (x, id_token, edge_index, batch), y = Pooled(), windows(), torch.tensor([0, 1])
    mode = NormalMode()
    outputs = mode.outputs(model, Batch(x, id_token, edge_index, batch, y))
    assert outputs["member_logits"].shape == (1, 2, 2)
    torch.testing.assert_close(mode.task_loss(outputs, Batch(x, id_token, edge_index, batch, y)), F.cross_entropy(model(x, id_token, edge_index, batch), y))
