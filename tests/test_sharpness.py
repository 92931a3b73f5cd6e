"""The architecture prior's power at adaptation (``adapt_sharpness``): the math of
``sharpen_architecture`` and the evaluation's reuse rule (runs adapting from the sharpened
prior, and old runs from the prior itself: tests/test_adapt.py)."""

import math

import pytest
import torch

from pyro_base.inference.commands.evaluate import _covers
from pyro_base.inference.commands.evaluate import build_parser as evaluate_parser
from pyro_base.inference.run.factory import sharpen_architecture


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
