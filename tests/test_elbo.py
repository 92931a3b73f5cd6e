"""The two ELBO objects agree: Pyro's ``TraceMeanField_ELBO`` (:class:`PyroELBO`) and the
Pyro-free :class:`FunctionalELBO` give equal losses and gradients in float64 with q != p, and
equal whole inner loops, first and second order."""

import pyro
import pytest
import torch

from pyro_base.inference.vi.elbo import FunctionalELBO, PyroELBO
from pyro_base.inference.vi.guides import OptimizationEmbeddingGuide
from pyro_base.models.base_model import BASEModel
from pyro_base.models.priors import FixedGaussianPrior
from pyro_base.models.relaxations import Concrete, StraightThrough, categorical_kl
from pyro_base.search_space import SearchSpace
from pyro_base.supernet import SuperNet


def _bump(p, i):
    g = torch.Generator().manual_seed(100 + i)
    return torch.randn(p.shape, generator=g, dtype=p.dtype)


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
        # q != p (the KL and its gradient are exercised): q's parameters are W moved by a
        # fixed perturbation, kept differentiable with respect to W (the prior side) too
        params = {n: p + 0.2 * _bump(p, i) for i, (n, p) in enumerate(model.W.named_tensors()
                                                                        .items())}
        torch.manual_seed(1)
        loss = guide.loss(guide.posterior(params), x, y, size=10, n_classes=5,
                          temperature=0.5)
        leaves = list(model.W.named_tensors().values())
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
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


def test_elbo_objects_have_one_signature_and_the_guide_takes_either():
    model = _model(Concrete(), torch.float64)
    x, y = _data(torch.float64)
    params = {n: (p.detach() + 0.2 * _bump(p, i)) for i, (n, p)
              in enumerate(model.W.named_tensors().items())}
    losses = []
    for elbo in (PyroELBO(), FunctionalELBO()):
        guide = OptimizationEmbeddingGuide(model, elbo=elbo)
        assert guide.elbo is elbo and guide.elbo_impl == elbo.name
        torch.manual_seed(1)
        losses.append(elbo.loss(model, guide.posterior(params), x, y, size=10, n_classes=5,
                                temperature=0.5))
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-10, atol=1e-12)


def test_functional_kl_part_is_the_analytic_kl():
    """With the likelihood switched off (beta huge), the per-datum loss times N / beta is
    KL(q(theta) || p(theta)) + sum_c KL(q(z_c) || p(z_c)), computed here in closed form."""
    model = _model(Concrete(), torch.float64)
    model.beta = 1e12
    x, y = _data(torch.float64)
    W = model.W.named_tensors()
    params = {n: p.detach() + 0.2 * _bump(p, i) for i, (n, p) in enumerate(W.items())}
    post = OptimizationEmbeddingGuide(model).posterior(params)
    loss = FunctionalELBO().loss(model, post, x, y, size=10, n_classes=5, temperature=0.5)
    q = torch.distributions.Normal(params["mu"], params["log_sigma"].exp())
    p = torch.distributions.Normal(W["mu"].detach(), W["log_sigma"].detach().exp())
    kl = float(torch.distributions.kl_divergence(q, p).sum())
    kl += sum(float(categorical_kl(params[f"alpha_{c}"], W[f"alpha_{c}"].detach()).sum())
              for c in model.W.cells)
    assert kl > 1.0
    assert float(loss.detach()) * 10 / model.beta == pytest.approx(kl, rel=1e-6)
