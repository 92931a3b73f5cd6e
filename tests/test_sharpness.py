"""The architecture prior's power at adaptation (``adapt_sharpness``): the math of
``sharpen_architecture``, and that every adaptation from a run (adapt, few-shot, evaluate, the
main job's held-out look) starts from the sharpened prior, old runs from the prior itself."""

import json
import math

import numpy as np
import pytest
import torch
import yaml

from pyro_base import defaults
from pyro_base.inference.commands.adapt import cli as adapt_cli
from pyro_base.inference.commands.evaluate import _covers
from pyro_base.inference.commands.evaluate import build_parser as evaluate_parser
from pyro_base.inference.run.config import ConfigError, MetaConfig
from pyro_base.inference.run.factory import (
    build_model,
    build_space,
    load_trained,
    sharpen_architecture,
)
from pyro_base.inference.run.job import meta_train_run

TINY = dict(preset="cpu", channels=4, cells=2, nodes=2, tasks_per_step=2, inner_steps=1,
            n_support=16, n_query=16, inner_batch=8, threads=0, steps=2, posterior_draws=4,
            num_samples=1, n_heldout=1)
TASK = ["--task-source", "procedural", "--family", "motif", "--n-support", "24",
        "--n-query", "16", "--device", "cpu", "--no-progress", "--log-level", "WARNING"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("sharp") / "run"
    meta_train_run(MetaConfig(**TINY), run_dir=path, progress=False)
    return path


def test_sharpening_is_the_renormalised_power_of_each_edges_prior():
    torch.manual_seed(0)
    alpha = torch.randn(5, 8, dtype=torch.float64)
    state = {"mu": torch.randn(7), "log_sigma": torch.randn(7), "alpha_normal": alpha,
             "alpha_reduce": torch.zeros(5, 8, dtype=torch.float64)}
    p = torch.softmax(alpha, -1)
    entropies = []
    for g in (0.5, 1.0, 2.0, 4.0, 16.0):
        out = sharpen_architecture(state, g)
        q = torch.softmax(out["alpha_normal"], -1)
        torch.testing.assert_close(q, p ** g / (p ** g).sum(-1, keepdim=True))
        assert torch.equal(q.argmax(-1), p.argmax(-1))                 # the ranking is kept
        assert torch.equal(out["alpha_reduce"], state["alpha_reduce"])  # uniform stays uniform
        assert out["mu"] is state["mu"] and out["log_sigma"] is state["log_sigma"]
        entropies.append(float(-(q * q.log()).sum(-1).mean()))
    assert entropies == sorted(entropies, reverse=True)   # sharper with every larger power
    assert torch.equal(sharpen_architecture(state, 1.0)["alpha_normal"], alpha)  # bit for bit
    for bad in (0.0, -1.0, math.inf, math.nan, "2"):
        with pytest.raises(ValueError, match="sharpness must be a finite number > 0"):
            sharpen_architecture(state, bad)


def test_load_trained_starts_from_the_runs_sharpened_prior(run):
    raw = torch.load(run / "checkpoint.pt", weights_only=False)["svi"]["W"]
    model, _, cfg, _ = load_trained(run)
    assert cfg.adapt_sharpness == defaults.ADAPT_SHARPNESS == 4.0  # a new run's default
    for name, value in model.W.state_dict().items():
        expected = raw[name] * 4.0 if name.startswith("alpha_") else raw[name]
        assert torch.equal(value, expected), name
    same, _, cfg1, _ = load_trained(run, sharpness=1.0)
    assert cfg1.adapt_sharpness == 1.0
    assert all(torch.equal(v, raw[k]) for k, v in same.W.state_dict().items())
    arch, _, _, _ = load_trained(run, transfer="architecture", sharpness=2.0)
    w0 = build_model(cfg, build_space(cfg)).W.state_dict()
    assert torch.equal(arch.W.alpha_normal, raw["alpha_normal"] * 2.0)
    assert torch.equal(arch.W.mu, w0["mu"])
    with pytest.raises(ConfigError, match="adapt_sharpness must be a finite number > 0"):
        load_trained(run, sharpness=0.0)


def test_a_run_written_before_the_setting_adapts_from_its_prior_itself(run, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    settings = yaml.safe_load((run / "config.yaml").read_text())
    settings.pop("adapt_sharpness")
    (old / "config.yaml").write_text(yaml.safe_dump(settings))
    (old / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes())
    model, _, cfg, _ = load_trained(old)
    raw = torch.load(run / "checkpoint.pt", weights_only=False)["svi"]["W"]
    assert cfg.adapt_sharpness == 1.0
    assert torch.equal(model.W.alpha_normal, raw["alpha_normal"])


def test_adapt_records_the_sharpness_and_the_flag_overrides_the_run(run, tmp_path, capsys):
    for flag, expected in (([], 4.0), (["--adapt-sharpness", "1"], 1.0)):
        out = tmp_path / f"a{expected:g}"
        assert adapt_cli(["--prior", str(run), "--out", str(out), "--steps", "1", *flag,
                          *TASK]) == 0
        record = json.loads((out / "adapt.json").read_text())
        assert record["sharpness"] == expected
        probs = np.array(record["op_probs"]["normal"])
        assert probs.shape[-1] == 8
    capsys.readouterr()
    assert adapt_cli(["--prior", str(run), "--out", str(tmp_path / "bad"),
                      "--adapt-sharpness", "-2", *TASK]) == 2
    assert "adapt_sharpness must be a finite number > 0" in capsys.readouterr().err


def test_zero_steps_of_adaptation_read_the_sharpened_prior(run, tmp_path):
    """After 0 steps the adapted op probabilities are the start's: softmax(g * alpha)."""
    raw = torch.load(run / "checkpoint.pt", weights_only=False)["svi"]["W"]
    for g in (1.0, 3.0):
        out = tmp_path / f"z{g:g}"
        assert adapt_cli(["--prior", str(run), "--out", str(out), "--steps", "0",
                          "--adapt-sharpness", str(g), *TASK]) == 0
        probs = torch.tensor(json.loads((out / "adapt.json").read_text())["op_probs"]["normal"])
        expected = torch.softmax(raw["alpha_normal"].double() * g, -1)
        torch.testing.assert_close(probs.double(), expected, atol=1e-6, rtol=0)


def test_evaluation_is_reused_only_for_the_same_sharpness():
    args = evaluate_parser().parse_args(["RUN", "--arms", "meta", "--tasks-per-family", "1",
                                         "--steps", "0"])
    data = {"settings": {"seed": 0, "arms": ["meta"], "steps": [0], "families": ["motif"]},
            "tasks": [{"family": "motif"}]}
    assert _covers(data, args, 1.0)          # written before the setting: power 1
    assert not _covers(data, args, 4.0)
    data["settings"]["adapt_sharpness"] = 4.0
    assert _covers(data, args, 4.0) and not _covers(data, args, 1.0)
    parsed = evaluate_parser().parse_args(["RUN", "--adapt-sharpness", "2.5"])
    assert parsed.adapt_sharpness == 2.5
