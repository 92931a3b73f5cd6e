"""The Pyro-free inner-loop ELBO equals the Pyro one (loss, gradients, whole inner loops), and
``scripts/bench.py`` runs one tiny configuration on CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch

from inference.guides import OptimizationEmbeddingGuide
from models.base_model import BASEModel
from models.priors import FixedGaussianPrior
from models.relaxations import Concrete, StraightThrough
from pyro_base.search_space import SearchSpace
from pyro_base.supernet import SuperNet

ROOT = Path(__file__).resolve().parents[1]


def _model(relaxation, dtype, weight_prior=None):
    torch.manual_seed(0)
    pyro.clear_param_store()
    net = SuperNet(SearchSpace.preset("tiny"))
    return BASEModel(net, relaxation=relaxation, beta=0.01, weight_prior=weight_prior).to(dtype)


def _data(dtype, n=6):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 3, 12, 12, generator=g, dtype=dtype), torch.randint(0, 5, (n,),
                                                                               generator=g)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("relaxation", [Concrete(), StraightThrough()], ids=repr)
@pytest.mark.parametrize("weight_posterior", ["gaussian", "delta"])
@pytest.mark.parametrize("fixed_prior", [False, True])
def test_functional_loss_and_grads_equal_pyro(dtype, tol, relaxation, weight_posterior,
                                              fixed_prior):
    prior = FixedGaussianPrior(scale=0.1) if fixed_prior else None
    model = _model(relaxation, dtype, prior)
    x, y = _data(dtype)
    out = []
    for impl in ("pyro", "functional"):
        guide = OptimizationEmbeddingGuide(model, weight_posterior=weight_posterior,
                                           elbo_impl=impl)
        params = dict(model.W.named_tensors())  # the nn.Parameters: gradients reach W
        torch.manual_seed(1)
        loss = guide.loss(guide.posterior(params), x, y, size=10, n_classes=5,
                          temperature=0.5)
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        out.append((loss, grads))
    (l_pyro, g_pyro), (l_fun, g_fun) = out
    assert torch.isfinite(l_pyro)
    torch.testing.assert_close(l_fun, l_pyro, rtol=tol, atol=tol)
    for a, b in zip(g_fun, g_pyro, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=tol, atol=tol * float(b.abs().max()))


@pytest.mark.parametrize("order", ["none", "second"])
def test_functional_inner_loop_equals_pyro(order):
    """Whole adapted posteriors (5 subsampled Adam steps) agree, first- and second-order."""
    model = _model(StraightThrough() if order == "none" else Concrete(), torch.float64)
    x, y = _data(torch.float64, n=10)
    results = []
    for impl in ("pyro", "functional"):
        guide = OptimizationEmbeddingGuide(model, inner_steps=5, batch_size=6, elbo_impl=impl)
        torch.manual_seed(2)
        post, losses = guide.adapt(x, y, n_classes=5, temperature=0.7, order=order)
        w_grad = None
        if order == "second":
            w_grad = torch.autograd.grad(post.params["mu"].sum()
                                         + post.params["alpha_normal"].pow(2).sum(),
                                         model.W.mu)[0]
        results.append((post.params, losses, w_grad))
    (p0, l0, g0), (p1, l1, g1) = results
    assert l0 == pytest.approx(l1, rel=1e-10)
    for k in p0:
        torch.testing.assert_close(p1[k], p0[k], rtol=1e-10, atol=1e-12)
    if g0 is not None:
        # second order through Adam's sqrt amplifies float64 rounding a little
        torch.testing.assert_close(g1, g0, rtol=1e-6, atol=1e-9 * float(g0.abs().max()))


def test_functional_rejects_unsupported_model():
    model = _model(Concrete(kl="mc"), torch.float32)
    with pytest.raises(ValueError, match="elbo_impl='pyro'"):
        OptimizationEmbeddingGuide(model, elbo_impl="functional")
    with pytest.raises(ValueError, match="elbo_impl"):
        OptimizationEmbeddingGuide(model, elbo_impl="jax")


def test_bench_script_runs_tiny_on_cpu(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--config", "tiny", "--repeats",
         "1", "--warmup", "0", "--device", "cpu", "--batch", "8", "--inner-steps", "2",
         "--tasks-per-step", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| config | batch | relaxation | variant | img/s | vs ref |" in proc.stdout
    # concrete: ref, pyro, pyro_stock, functional, graph, batched, batched_graph;
    # straight_through: ref, pyro, pyro_stock, functional
    assert proc.stdout.count("| tiny | 8 |") == 11
    rows = json.loads(out.read_text())["rows"]
    concrete = rows[0]
    assert concrete["variants"] == ["ref", "pyro", "pyro_stock", "functional", "graph",
                                    "batched", "batched_graph"]
    # the optimized paths give the Pyro path's losses on the same seed (float rounding)
    assert set(concrete["max_loss_diff"]) == set(concrete["variants"]) - {"ref"}
    assert max(concrete["max_loss_diff"].values()) < 1e-5
    assert all(concrete[f"{v}_img_s"] > 0 for v in concrete["variants"])


def test_bench_without_cuda_refuses_device_cuda_in_one_line():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--device",
                           "cuda"], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("bench.py: error: --device: device='cuda' but CUDA is not "
                                   "available; use 'cpu' or 'auto'")


def test_bench_help_needs_no_gpu():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--help"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0
    assert "--tasks-per-step" in proc.stdout

