"""Config and CLI: bad settings are rejected up front, naming the field, flag or file.

Through :class:`MetaConfig` directly, through YAML files, and through ``scripts/meta_svi.py``
(exit code 2 and one ``error:`` line on stderr, no traceback). Hypothesis throws random
mappings at ``MetaConfig.from_dict`` and random text at ``MetaConfig.from_yaml``: only
``ConfigError`` or a valid config may come out.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from script_runs import ROOT, command, env, script_module

from pyro_base.inference.run.config import ConfigError, MetaConfig

FIELDS = sorted(MetaConfig.__dataclass_fields__)


@pytest.mark.parametrize("changes, field", [
    ({"inner_lr": -0.1}, "inner_lr"), ({"meta_lr": 0.0}, "meta_lr"),
    ({"tasks_per_step": 0}, "tasks_per_step"), ({"steps": 0}, "steps"),
    ({"tau_start": 0.0}, "tau_start"), ({"tau_end": -1.0}, "tau_end"),
    ({"adapt_temperature": float("nan")}, "adapt_temperature"),
    ({"beta": float("inf")}, "beta"), ({"meta_lr_final": 1.5}, "meta_lr_final"),
    ({"inner_steps": -1}, "inner_steps"), ({"channels": 0}, "channels"),
    ({"collective_timeout": 1e300}, "collective_timeout"), ({"families": []}, "families"),
    ({"mode": "sgd"}, "mode"), ({"preset": "huge"}, "preset"),
    ({"weight_scale": 0.0}, "weight_scale"), ({"weight_scale": float("nan")}, "weight_scale"),
    ({"weight_update": "maml"}, "weight_update"),
    ({"inner_beta1": 1.0}, "inner_beta1"), ({"inner_beta1": -0.1}, "inner_beta1"),
])
def test_out_of_range_values_name_the_field(changes, field):
    with pytest.raises(ConfigError, match=field):
        MetaConfig(**changes)


@pytest.mark.parametrize("changes, field", [
    ({"steps": "10"}, "steps"), ({"steps": 2.5}, "steps"), ({"steps": True}, "steps"),
    ({"inner_lr": "fast"}, "inner_lr"), ({"deterministic": 1}, "deterministic"),
    ({"families": "motif"}, "families"), ({"families": [1, 2]}, "families"),
    ({"arch_lr": [0.1]}, "arch_lr"),
])
def test_wrong_types_name_the_field(changes, field):
    with pytest.raises(ConfigError, match=f"{field} .*(type|must)"):
        MetaConfig.from_dict(changes)


def test_unknown_keys_are_listed():
    with pytest.raises(ConfigError, match=r"run.yaml: unknown keys \['lr', 'stepz'\]"):
        MetaConfig.from_dict({"stepz": 3, "lr": 0.1, "steps": 3}, source="run.yaml")


def test_yaml_files_name_the_file(tmp_path):
    cases = {"bad.yaml": "steps: [1, 2\n", "list.yaml": "- 1\n- 2\n",
             "unknown.yaml": "stepz: 3\n", "wrong.yaml": "inner-lr: -1\n"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=str(tmp_path / name)):
            MetaConfig.from_yaml(tmp_path / name)
    with pytest.raises(ConfigError, match="does not exist"):
        MetaConfig.from_yaml(tmp_path / "missing.yaml")
    good = tmp_path / "good.yaml"
    MetaConfig(steps=7).to_yaml(good)
    assert MetaConfig.from_yaml(good, seed=3) == MetaConfig(steps=7, seed=3)


def test_yaml_files_read_exponent_floats_as_numbers(tmp_path):
    from pyro_base.config import load_yaml

    path = tmp_path / "run.yaml"  # PyYAML's YAML 1.1 rules read 1e-3 as the string "1e-3"
    path.write_text("beta: 1e-3\ninner-lr: 3E-2\ninit_scale: .3e-1\nsteps: 7\n")
    cfg = MetaConfig.from_yaml(path)
    assert (cfg.beta, cfg.inner_lr, cfg.init_scale, cfg.steps) == (1e-3, 3e-2, 3e-2, 7)
    assert isinstance(cfg.steps, int) and yaml.safe_load("a: 1e-3") == {"a": "1e-3"}
    assert load_yaml("[1, 1.5, 1e3, -2E-2, 1e, e5, abc]") == [1, 1.5, 1e3, -2e-2, "1e", "e5",
                                                              "abc"]
    path.write_text("steps: 1e3\n")  # a float where an int belongs is still refused
    with pytest.raises(ConfigError, match="steps must be of type int"):
        MetaConfig.from_yaml(path)


@pytest.fixture
def cli(monkeypatch):
    """``scripts/meta_svi.py``'s ``cli`` in-process; root log handlers restored afterwards."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    return script_module().cli


@pytest.mark.parametrize("argv, message", [
    (["--inner-lr", "-1"], "error: command line: inner_lr must be a finite number > 0"),
    (["--tasks-per-step", "0"], "error: command line: tasks_per_step must be >= 1"),
    (["--tau-start", "0"], "error: command line: tau_start must be a finite number > 0"),
    (["--resume", "/nonexistent/run"], "error: --resume /nonexistent/run: no config.yaml"),
    (["--channels", "7"], "error: channels must be even"),
    (["--families", "motiff"], "error: families must be a non-empty subset of"),
    (["--n-support", "3"], "error: n_support must be >= the largest n_classes"),
])
def test_cli_bad_values_exit_2_with_message(cli, capsys, argv, message):
    assert cli([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and "Traceback" not in err


def test_cli_bad_config_file_exits_2(cli, capsys, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("steps: ten\n")
    assert cli(["--config", str(path)]) == 2
    assert f"error: {path}: steps must be of type int" in capsys.readouterr().err
    path.write_text("steps: [\n")
    assert cli(["--config", str(path)]) == 2
    assert f"error: config file {path} is not valid YAML" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--stepz", "3"], "unrecognized arguments: --stepz"),
    (["--steps", "ten"], "argument --steps: invalid int value: 'ten'"),
    (["--mode", "sgd"], "argument --mode: invalid choice: 'sgd'"),
    (["--steps"], "argument --steps: expected one argument"),
])
def test_cli_bad_flags_give_usage_and_exit_2(cli, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        cli(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage:") and message in err


def test_script_subprocess_has_no_traceback(tmp_path):
    """The real entry point: exit code 2 and one error line (no Python traceback)."""
    proc = subprocess.run(command("--meta-lr", "-1", "--run-dir", str(tmp_path / "r")),
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: command line: meta_lr must be a finite number > 0, got -1.0"]
    assert not (tmp_path / "r").exists()  # nothing was created


# -- property-based ----------------------------------------------------------------------------
scalars = (st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats()
           | st.text(max_size=8) | st.sampled_from(["cpu", "tiny", "reptile", "skip", "1e-3"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)
keys = st.sampled_from(FIELDS) | st.text(max_size=10) | st.integers() | st.none()


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(keys, values, max_size=6))
def test_random_configs_raise_only_config_error(d):
    try:
        cfg = MetaConfig.from_dict(d)
    except ConfigError:
        return
    assert MetaConfig.from_dict(cfg.to_dict()) == cfg  # what passes round-trips


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200) | st.dictionaries(st.sampled_from(FIELDS), values, max_size=4)
       .map(lambda d: yaml.safe_dump(d)))
def test_random_yaml_raises_only_config_error(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.yaml"
        path.write_text(text)
        try:
            MetaConfig.from_yaml(path)
        except ConfigError:
            pass


def test_tasks_are_capped_at_the_supernet_outputs():
    """The tiny preset has 5 outputs: procedural tasks built for it have exactly 5 classes."""
    from pyro_base.inference.run.factory import build_space, build_tasks

    cfg = MetaConfig(preset="tiny", n_support=20, n_query=20)
    space = build_space(cfg)
    tasks = build_tasks(cfg, space).tasks("train", 5)
    assert {t.n_classes for t in tasks} == {5}


def test_resume_refuses_a_newer_setting_changed_from_the_value_an_old_checkpoint_ran_with(
        tmp_path):
    """A checkpoint saved before ``weight_scale`` existed ran with 1.0: resuming it with
    another value would change what its steps computed, so it is refused by name."""
    from pyro_base.inference.run.job import check_resumable

    saved = MetaConfig(preset="tiny").to_dict()
    for key in ("weight_scale", "weight_update", "arch_update"):
        del saved[key]
    check_resumable(MetaConfig(preset="tiny", arch_update="reptile"), saved, tmp_path / "c.pt")
    for change in ({"weight_scale": 0.5}, {"weight_update": "query"},
                   {"arch_update": "mixture"}):
        cfg = MetaConfig(preset="tiny", **{"arch_update": "reptile", **change})
        with pytest.raises(ConfigError, match=f"{next(iter(change))}: "):
            check_resumable(cfg, saved, tmp_path / "c.pt")


def test_a_run_file_without_a_newer_setting_keeps_the_value_it_ran_with(tmp_path):
    """A run directory's config.yaml written before ``arch_update`` existed trained with the
    logit step: resuming or evaluating it keeps that, while a new run gets the default."""
    from pyro_base.inference.run.config import RUN_FILE_DEFAULTS

    old = MetaConfig(preset="tiny").to_dict()
    del old["arch_update"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    assert MetaConfig.from_run_file(path).arch_update == RUN_FILE_DEFAULTS["arch_update"]
    assert MetaConfig.from_run_file(path, arch_update="mixture").arch_update == "mixture"
    assert MetaConfig.from_yaml(path).arch_update == "mixture"  # a settings file: the default
    MetaConfig(preset="tiny", arch_update="mixture").to_yaml(path)
    assert MetaConfig.from_run_file(path).arch_update == "mixture"


def test_settings_of_what_follows_the_meta_steps_may_change_on_resume(tmp_path):
    """Adaptation and refit settings change nothing the saved meta-steps computed: a resume
    takes them, while a setting of the meta-steps themselves is refused by name."""
    from pyro_base.inference.run.job import check_resumable

    saved = MetaConfig(preset="tiny").to_dict()
    for change in ({"adapt_sharpness": 1.0}, {"adapt_steps": 7}, {"arch_refit_tasks": 0},
                   {"arch_refit_steps": 3}, {"arch_refit_workers": 1}, {"meta_workers": 1}):
        check_resumable(MetaConfig(preset="tiny", **change), saved, tmp_path / "c.pt")
    with pytest.raises(ConfigError, match="inner_steps: "):
        check_resumable(MetaConfig(preset="tiny", inner_steps=2), saved, tmp_path / "c.pt")
