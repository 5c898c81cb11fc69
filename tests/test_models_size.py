"""Students are ≤ 7 % of their teacher's parameters on any vocabulary, and teachers change only as documented."""

import pytest
import torch
import torch.nn.functional as F

from kdcore.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from kdcore.engine import Engine
from kdcore.models import GAT, VGAE

RATIO = 0.07
MODELS = [GAT, VGAE]
FEATURES = (14, 21)


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def build(model_class, size, num_ids, features=14):
    return model_class(num_node_features=features, num_ids=num_ids, num_classes=2, **model_class.sizes[size])


def per_id_and_fixed(model_class, size, features):
    """(parameters per CAN ID, parameters that do not depend on the vocabulary), measured."""
    one, two = params(build(model_class, size, 1, features)), params(build(model_class, size, 2, features))
    per_id = two - one
    assert params(build(model_class, size, 1001, features)) == one + 1000 * per_id, "linear in the vocabulary"
    return per_id, one - per_id


@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.name)
@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize("num_ids", [1, 24, 67, 150, 2000, 5000])
def test_student_is_at_most_7_percent_of_its_teacher(model_class, features, num_ids):
    teacher = params(build(model_class, "teacher", num_ids, features))
    student = params(build(model_class, "student", num_ids, features))
    assert student <= RATIO * teacher, f"{model_class.name}: {student} / {teacher} = {student / teacher:.2%}"


@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.name)
@pytest.mark.parametrize("features", FEATURES)
def test_both_parts_of_the_student_are_within_budget_so_any_vocabulary_is(model_class, features):
    teacher_per_id, teacher_fixed = per_id_and_fixed(model_class, "teacher", features)
    student_per_id, student_fixed = per_id_and_fixed(model_class, "student", features)
    assert 0 < student_per_id <= RATIO * teacher_per_id
    assert 0 < student_fixed <= RATIO * teacher_fixed


def gat_teacher_shapes(f, n):
    """One network's as they always were, once per member, beside the ID embedding they share."""
    shapes = {"id_embedding.weight": (n, 16)}
    for member in range(GAT.sizes["teacher"]["members"]):
        network = {}
        for layer, fan_in in enumerate((f + 16, 64, 64)):
            network |= {
                f"convs.{layer}.att_src": (1, 4, 64), f"convs.{layer}.att_dst": (1, 4, 64),
                f"convs.{layer}.bias": (64,), f"convs.{layer}.lin.weight": (256, fan_in),
            }
        network |= {"classifier.0.weight": (64, 192), "classifier.0.bias": (64,), "classifier.3.weight": (2, 64), "classifier.3.bias": (2,)}
        shapes |= {f"members.{member}.{name}": shape for name, shape in network.items()}
    return shapes


def vgae_teacher_shapes(f, n):
    shapes = {
        "id_embedding.weight": (n, 16),
        "encoder.att_src": (1, 4, 96), "encoder.att_dst": (1, 4, 96), "encoder.bias": (96,), "encoder.lin.weight": (384, f + 16),
    }
    for head in ("mu", "logvar"):
        shapes |= {f"{head}.att_src": (1, 1, 48), f"{head}.att_dst": (1, 1, 48), f"{head}.bias": (48,), f"{head}.lin.weight": (48, 96)}
    return shapes | {
        "feature_head.0.weight": (96, 48), "feature_head.0.bias": (96,), "feature_head.2.weight": (f, 96), "feature_head.2.bias": (f,),
        "canid_head.weight": (n, 48), "canid_head.bias": (n,),
    }


# The teachers' parameters: as they were before the students were resized (issue #14). Old teacher
# checkpoints hold their own and load strictly.
TEACHER_SHAPES = {"gat": gat_teacher_shapes, "vgae": vgae_teacher_shapes}
OLD_TEACHER_HPARAMS = {
    "gat": dict(num_node_features=14, num_ids=67, num_classes=2, hidden_channels=64, heads=4, num_layers=3, embedding_dim=16, dropout=0.2),
    "vgae": dict(num_node_features=14, num_ids=67, num_classes=2, hidden_channels=96, latent_dim=48, heads=4, embedding_dim=16),
}


@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.name)
@pytest.mark.parametrize(("features", "num_ids"), [(14, 67), (21, 150)])
def test_teachers_have_the_parameters_they_always_had(model_class, features, num_ids):
    teacher = build(model_class, "teacher", num_ids, features)
    shapes = {name: tuple(tensor.shape) for name, tensor in teacher.named_parameters()}
    assert shapes == TEACHER_SHAPES[model_class.name](features, num_ids)


@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.name)
def test_an_old_teacher_checkpoint_loads_and_computes_the_same(model_class, tmp_path):
    hparams = OLD_TEACHER_HPARAMS[model_class.name]  # as saved before: no new keys
    torch.manual_seed(0)
    old = model_class(**hparams).eval()
    path = tmp_path / "teacher.pth"
    weights = {name: tensor for name, tensor in old.state_dict().items() if name != "error_scale"}  # saved before the VGAE's error scale
    save_checkpoint(path, Checkpoint(model=model_class.name, hparams=dict(hparams), state_dict=weights))
    loaded = Engine(load_entry_points=False).load_model(load_checkpoint(path), path)
    if model_class.name == "vgae":
        assert torch.equal(loaded.error_scale, torch.ones(14)), "an old VGAE loads with its error scale at ones"
    x, id_token, edge_index = torch.randn(6, 14), torch.tensor([0, 1, 5, 66, 5, 2]), torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]])
    batch = torch.zeros(6, dtype=torch.long)
    for want, got in zip(_outputs(old, x, id_token, edge_index, batch), _outputs(loaded, x, id_token, edge_index, batch)):
        torch.testing.assert_close(got, want)


def _outputs(model, *inputs):
    with torch.no_grad():
        out = model(*inputs)
    return out if isinstance(out, tuple) else (out,)


def test_an_old_vgae_student_checkpoint_still_rebuilds_untied():
    old_student = dict(num_node_features=14, num_ids=24, num_classes=2, hidden_channels=12, latent_dim=8, heads=1, embedding_dim=4)
    model = VGAE(**old_student)
    assert tuple(model.state_dict()["canid_head.weight"].shape) == (24, 8) and "canid_projection.weight" not in model.state_dict()


def window(num_ids, features=14, nodes=9):
    x = torch.randn(nodes, features)
    id_token = torch.arange(nodes) % num_ids
    edge_index = torch.stack([torch.arange(nodes - 1), torch.arange(1, nodes)])
    return x, id_token, edge_index


@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize("num_ids", [1, 24, 150])
def test_student_outputs_have_the_shapes_of_the_teachers(features, num_ids):
    x, id_token, edge_index = window(num_ids, features)
    batch = torch.tensor([0] * 5 + [1] * 4)
    for model_class in MODELS:
        teacher, student = build(model_class, "teacher", num_ids, features).eval(), build(model_class, "student", num_ids, features).eval()
        want, got = _outputs(teacher, x, id_token, edge_index, batch), _outputs(student, x, id_token, edge_index, batch)
        assert len(got) == len(want)
        for name, w, g in zip(("out", "canid_logits", "neighbor_logits", "z", "kl"), want, got):
            expected = (*w.shape[:-1], VGAE.sizes["student"]["latent_dim"]) if name == "z" and model_class is VGAE else w.shape
            assert g.shape == expected, (model_class.name, name)
            assert torch.isfinite(g).all()
    cont_out, canid_logits, neighbor_logits, z, kl = _outputs(build(VGAE, "student", num_ids, features).train(), x, id_token, edge_index, batch)
    assert canid_logits.shape == (9, num_ids) and neighbor_logits.shape == (2 * edge_index.size(1),) and kl.dim() == 0


def test_the_students_canid_head_is_its_input_embedding():
    torch.manual_seed(0)
    student = build(VGAE, "student", 24).eval()
    assert not hasattr(student, "canid_head")
    x, id_token, edge_index = window(24)
    _, canid_logits, _, z, _ = student(x, id_token, edge_index)
    torch.testing.assert_close(canid_logits, student.canid_projection(z) @ student.id_embedding.weight.T)
    canid_logits.sum().backward()
    unused = sorted(set(range(24)) - set(id_token.tolist()))
    assert student.id_embedding.weight.grad[unused].abs().sum() > 0, "IDs absent from the window are still scored"


def test_the_tied_student_learns_to_reconstruct_can_ids():
    torch.manual_seed(0)
    student = build(VGAE, "student", 24)
    x, id_token, edge_index = window(24, nodes=48)
    x = torch.zeros_like(x)  # the ID must come through the embedding, not the features
    optimizer = torch.optim.Adam(student.parameters(), lr=0.03)
    student.eval()  # the mean latent: no sampling noise
    for _ in range(150):
        optimizer.zero_grad()
        loss = F.cross_entropy(student(x, id_token, edge_index)[1], id_token)
        loss.backward()
        optimizer.step()
    accuracy = (student(x, id_token, edge_index)[1].argmax(-1) == id_token).float().mean()
    assert accuracy >= 0.9, f"{accuracy:.2f} (loss {loss.item():.3f})"


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_students_export(tmp_path, format):
    from kdcore.data.preprocess import Preprocessing
    from kdcore.data.traffic import generate_traffic
    from kdcore.data.windows import build_window_graphs
    from kdcore.export import TOLERANCE, export_checkpoint
    from kdcore.plugins.modes.autoencoder import SCORE

    preprocessing = Preprocessing.fit(build_window_graphs(generate_traffic(5.0, seed=0), 50, 50))
    for model_class in MODELS:
        model = model_class(num_node_features=preprocessing.num_features, num_ids=preprocessing.num_ids, **model_class.sizes["student"])
        path = tmp_path / f"{model_class.name}.pth"
        extra = {"data": {"preprocessing": preprocessing.to_dict(), "window_size": 50}, "score": SCORE}
        save_checkpoint(path, Checkpoint(model=model_class.name, hparams=model.hparams, state_dict=model.state_dict(), extra=extra))
        report = export_checkpoint(path, format, tmp_path / f"{model_class.name}.{format}", engine=Engine(load_entry_points=False))
        assert report.max_abs_diff <= TOLERANCE and report.windows > 1


def test_with_context_a_node_is_judged_against_the_whole_window():
    """Two nodes without an edge between them: only through the window context does one node's
    state after the first layer depend on the other's features."""
    def first_layer_of_node_0(model, other):
        seen = []
        hook = model.members[0].convs[1].register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0][0].clone()))
        x = torch.stack([torch.ones(14), torch.full((14,), other)])
        with torch.no_grad():
            model.embed(x, torch.tensor([1, 2]), torch.zeros((2, 0), dtype=torch.long), torch.zeros(2, dtype=torch.long))
        hook.remove()
        return seen[0]

    torch.manual_seed(0)
    with_context = GAT(num_node_features=14, num_ids=4, **{**GAT.sizes["teacher"], "context": True}).eval()
    assert with_context.hparams["context"] and not build(GAT, "teacher", 4).hparams["context"]
    assert not torch.allclose(first_layer_of_node_0(with_context, 0.0), first_layer_of_node_0(with_context, 5.0))
    without = build(GAT, "teacher", 4).eval()
    assert torch.equal(first_layer_of_node_0(without, 0.0), first_layer_of_node_0(without, 5.0))


def test_a_gat_saved_before_its_activation_was_a_hyperparameter_keeps_relu():
    assert isinstance(GAT(**OLD_TEACHER_HPARAMS["gat"]).members[0].activation, torch.nn.ReLU)
    for size in ("teacher", "student"):
        assert all(isinstance(network.activation, torch.nn.ELU) for network in build(GAT, size, 24).members)
    with pytest.raises(ValueError, match="activation must be one of"):
        GAT(num_node_features=14, num_ids=3, activation="tanh")


@pytest.mark.parametrize(("activation", "constant"), [("relu", True), ("elu", False)])
def test_a_classifier_pushed_below_zero_still_tells_windows_apart_with_elu(activation, constant):
    """The ROAD GAT student+KD's classifier had every hidden unit below zero on a whole capture:
    with ReLU one constant score for its normal and attack windows alike."""
    torch.manual_seed(0)
    student = GAT(num_node_features=14, num_ids=24, **{**GAT.sizes["student"], "activation": activation}).eval()
    with torch.no_grad():
        student.members[0].classifier[0].bias.fill_(-5.0)
    x, id_token, edge_index = window(24)
    batch = torch.zeros(9, dtype=torch.long)
    with torch.no_grad():
        hidden = student.members[0].classifier[0](student.embed(x, id_token, edge_index, batch))
        first, second = student(x, id_token, edge_index, batch), student(x * 3, id_token, edge_index, batch)
    assert (hidden < 0).all()
    assert torch.equal(first, second) == constant
