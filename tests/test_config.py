from __future__ import annotations

from pathlib import Path

import pytest

from retrodistill.config import ConfigError, TrainConfig, load_config, parse_override, to_dict


def test_defaults_then_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "epochs: 3\nstudent:\n  layers: 2\nloss:\n  name: listwise-kl\n  params: {temperature_teacher: 2}\n"
    )
    cfg = load_config(TrainConfig, path, ["epochs=5", "loss.params.temperature_student=0.5"])
    assert cfg.epochs == 5
    assert cfg.student.layers == 2
    assert cfg.student.model == TrainConfig().student.model  # untouched default survives the partial section
    assert cfg.loss.params == {"temperature_teacher": 2, "temperature_student": 0.5}


def test_unknown_key_names_path_and_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("student:\n  layrs: 2\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*student\.layrs"):
        load_config(TrainConfig, path)


def test_wrong_type_is_an_error() -> None:
    with pytest.raises(ConfigError, match="student.layers: expected an integer"):
        load_config(TrainConfig, None, ["student.layers=two"])


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: 1\nstudent: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_config(TrainConfig, path)


def test_override_values_are_yaml() -> None:
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a=[x, y]") == ("a", ["x", "y"])
    assert parse_override("a=null") == ("a", None)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("novalue")


def test_resolved_config_round_trips() -> None:
    cfg = load_config(TrainConfig, None, ["student.layers=2", "bf16=true"])
    assert load_config(TrainConfig, None, [], base=to_dict(cfg)) == cfg


def test_exponent_without_dot_is_a_float() -> None:
    # PyYAML (YAML 1.1) reads "2e-4" as a string.
    assert load_config(TrainConfig, None, ["learning_rate=2e-4"]).learning_rate == 2e-4
    with pytest.raises(ConfigError, match="learning_rate: expected a number"):
        load_config(TrainConfig, None, ["learning_rate=fast"])


def test_command_line_options_are_merged_as_values_and_errors_say_where(tmp_path: Path) -> None:
    from retrodistill.config import MineConfig

    file = tmp_path / "mine.yaml"
    file.write_text("k: 50\nout: from-file\n")
    # A path with YAML-special characters survives: no round trip through --set strings.
    cfg = load_config(MineConfig, file, ["k=7"], options={"out": "runs/a: b #1", "data": {"split": None}})
    assert cfg.out == "runs/a: b #1" and cfg.k == 7 and cfg.data.split == "train"
    with pytest.raises(ConfigError, match=r"^command-line option for k: expected an integer"):
        load_config(MineConfig, file, [], options={"k": "many"})
    with pytest.raises(ConfigError, match=r"^--set k: expected an integer"):
        load_config(MineConfig, file, ["k=many"])
    file.write_text("k: many\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: k: expected an integer"):
        load_config(MineConfig, file)
