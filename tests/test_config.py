import pytest

from kdcore.config import FIELD_NAMES, RunConfig, load_config, parse_override
from kdcore.errors import ConfigError


def test_defaults_follow_the_plan():
    config = RunConfig()
    assert config.use_knowledge_distillation is False
    assert config.teacher_model_path is None
    assert config.distillation_temperature == 4.0
    assert config.distillation_alpha == 0.7
    assert config.modality == "automotive"
    assert config.distillation == "no-kd"
    assert RunConfig(use_knowledge_distillation=True).distillation == "with-kd"


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        RunConfig().mode = "fusion"


def test_toml_file_with_overrides_on_top(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('mode = "autoencoder"\nmax_epochs = 3\ndistillation_alpha = 0.5\n')
    config = load_config(path, {"max_epochs": 7})
    assert (config.mode, config.max_epochs, config.distillation_alpha) == ("autoencoder", 7, 0.5)


def test_unknown_key_names_the_key_the_file_and_the_closest_key(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("distilation_alpha = 0.5\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'distilation_alpha' in .*run.toml; did you mean 'distillation_alpha'\?"):
        load_config(path)


def test_unknown_key_without_a_close_match_gets_no_suggestion():
    with pytest.raises(ConfigError) as caught:
        load_config(overrides={"zzzz": 1})
    assert "did you mean" not in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"distillation_alpha": 1.5}, "distillation_alpha must be in \\[0, 1\\]"),
        ({"distillation_alpha": -0.1}, "distillation_alpha must be in \\[0, 1\\]"),
        ({"distillation_temperature": 0}, "distillation_temperature must be > 0"),
        ({"max_epochs": 0}, "max_epochs must be > 0"),
        ({"train_window_stride": 0}, "train_window_stride must be > 0"),
        ({"train_window_stride": 2.5}, "'train_window_stride'.*expected int"),
        ({"model_size": "huge"}, "model_size must be one of teacher, student"),
        ({"max_epochs": "ten"}, "'max_epochs'.*expected int"),
        ({"use_knowledge_distillation": "yes"}, "'use_knowledge_distillation'.*expected bool"),
        ({"max_epochs": True}, "'max_epochs'.*expected int"),
        ({"loggers": ["csv", "wandb"]}, "loggers takes names among csv, tensorboard, mlflow, got 'wandb'"),
        ({"loggers": "csv,csv"}, "loggers must not repeat a value"),
        ({"loggers": [1]}, "'loggers'.*expected a list of names"),
    ],
)
def test_invalid_values_are_refused_at_config_time(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_set_values_are_read_as_toml_literals():
    assert parse_override("max_epochs=3") == ("max_epochs", 3)
    assert parse_override("distillation_alpha=0.25") == ("distillation_alpha", 0.25)
    assert parse_override("use_knowledge_distillation=true") == ("use_knowledge_distillation", True)
    assert parse_override("model=gat") == ("model", "gat")
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("max_epochs")


def test_malformed_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("mode = \n")
    with pytest.raises(ConfigError, match="broken.toml: not valid TOML"):
        load_config(path)


def test_every_field_round_trips_through_toml(tmp_path):
    from kdcore.config import write_toml

    config = RunConfig(mode="curriculum", teacher_model_path="t.pth", use_knowledge_distillation=True)
    path = tmp_path / "c.toml"
    path.write_text(write_toml(config))
    assert load_config(path) == config
    assert "mode" in FIELD_NAMES
