"""One config system: every command's settings are a :class:`pyro_base.config.Config`, flags
are generated from the fields (help, choices, default), YAML in and out, and the shared flags
(``--config``, ``--progress``, ``--log-level``, ``--seed``) mean the same in every command."""

import argparse
import dataclasses

import pytest

from pyro_base.cli import add_common_arguments, add_config_arguments, resolve_config
from pyro_base.config import Config, ConfigError, option
from pyro_base.inference.evaluate.train_config import TrainConfig
from pyro_base.inference.run.config import MetaConfig
from pyro_base.inference.run.experiment import ExperimentConfig
from pyro_base.inference.search.config import SearchConfig

CONFIGS = (MetaConfig, TrainConfig, SearchConfig, ExperimentConfig)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Toy(Config):
    steps: int = option(3, "steps")
    mode: str = option("a", "the mode", choices=("a", "b"))
    tags: list[str] | None = option(None, "tags")
    fast: bool = option(False, "go fast")

    def validate(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_config_round_trips_through_yaml(cls, tmp_path):
    cfg = cls.preset("cpu") if callable(getattr(cls, "preset", None)) else cls()
    path = cfg.to_yaml(tmp_path / "c.yaml")
    again = cls.from_yaml(path)
    assert again.to_dict() == {k: (list(v) if isinstance(v, tuple) else v)
                               for k, v in cfg.to_dict().items()} or again == cfg
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown keys \['nope'\]"):
        cls.from_yaml(path, nope=1)


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_config_rejects_a_wrong_type_naming_the_field(cls):
    with pytest.raises(ConfigError, match="seed"):
        cls(seed="zero")
    assert issubclass(ConfigError, ValueError)


def test_fields_checked_for_type_and_choice_then_validate():
    assert _Toy(steps=2, mode="b", tags=["x"]).tags == ["x"]
    with pytest.raises(ConfigError, match=r"mode must be one of \('a', 'b'\), got 'c'"):
        _Toy(mode="c")
    with pytest.raises(ConfigError, match="fast must be of type bool"):
        _Toy(fast=1)
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        _Toy(steps=0)


def test_generated_flags_show_help_choices_default_and_parse_types():
    p = argparse.ArgumentParser()
    add_config_arguments(p, _Toy)
    text = p.format_help()
    assert "--mode {a,b}" in text and "the mode (default: a)" in text
    assert "--fast, --no-fast" in text
    args = p.parse_args(["--steps", "5", "--tags", "x", "y", "--fast"])
    assert vars(args) == {"steps": 5, "tags": ["x", "y"], "fast": True}  # only what was given
    with pytest.raises(SystemExit):
        p.parse_args(["--mode", "c"])


def test_preset_then_file_then_flags(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("epochs: 3\nbatch-size: 16\nlr: 0.1\n")
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="cpu")
    add_common_arguments(p)
    add_config_arguments(p, TrainConfig)
    cfg = resolve_config(p.parse_args(["--config", str(path), "--lr", "0.2"]), TrainConfig)
    assert (cfg.epochs, cfg.batch_size, cfg.lr) == (3, 16, 0.2)           # file, then flags
    assert cfg.init_channels == TrainConfig.preset("cpu").init_channels   # the preset's
    bad = tmp_path / "bad.yaml"
    bad.write_text("epoch: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown keys \['epoch'\]"):
        resolve_config(p.parse_args(["--config", str(bad)]), TrainConfig)
    with pytest.raises(ConfigError, match="flags: lr must be"):
        resolve_config(p.parse_args(["--lr", "-1"]), TrainConfig)


def test_cpu_preset_counts_steps_and_either_budget_flag_replaces_it():
    cpu = TrainConfig.preset("cpu")
    assert (cpu.epochs, cpu.steps) == (None, 800)
    assert (TrainConfig.preset("cpu", epochs=60).epochs,
            TrainConfig.preset("cpu", epochs=60).steps) == (60, None)
    assert (TrainConfig.preset("cpu", steps=50).epochs,
            TrainConfig.preset("cpu", steps=50).steps) == (None, 50)
    assert (TrainConfig.preset("darts").epochs, TrainConfig.preset("darts").steps) == (600, None)
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="cpu")
    add_common_arguments(p)
    add_config_arguments(p, TrainConfig)
    cfg = resolve_config(p.parse_args(["--epochs", "60"]), TrainConfig)
    assert (cfg.epochs, cfg.steps) == (60, None)
    with pytest.raises(ConfigError, match="exactly one of epochs and steps"):
        resolve_config(p.parse_args(["--epochs", "6", "--steps", "6"]), TrainConfig)


def test_common_flags_have_one_meaning():
    p = argparse.ArgumentParser()
    add_common_arguments(p)
    assert vars(p.parse_args([])) == {"config": None, "progress": True, "log_level": "INFO"}
    args = p.parse_args(["--no-progress", "--log-level", "warning"])
    assert args.progress is False and args.log_level == "WARNING"


@pytest.mark.parametrize("command, seed_field", [("meta_svi", "seed"), ("train", "seed"),
                                                 ("search", "seed")])
def test_seed_is_the_commands_own_seed_and_tasks_have_task_seed(command, seed_field):
    import importlib

    module = importlib.import_module(f"pyro_base.inference.commands.{command}")
    parser = module.build_parser()
    required = {"train": ["--genotype", "DARTS_V2"],
                "search": ["--method", "darts", "--out", "x.json"]}.get(command, [])
    args = parser.parse_args([*required, "--seed", "7"])
    assert getattr(args, seed_field) == 7
    if command != "meta_svi":
        assert parser.parse_args([*required, "--task-seed", "2"]).task_seed == 2
    help_ = parser.format_help()
    assert "--progress, --no-progress" in help_ and "--log-level" in help_
    assert "--config FILE" in help_
