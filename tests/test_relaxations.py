"""Relaxed architecture sites: the analytic categorical KL (closed-form gradient, gradcheck, and
that it is what TraceMeanField_ELBO uses), finiteness at tau = 0.05, exact one-hot
straight-through values, and temperature schedules."""

import math

import pyro
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

from pyro_base.inference.vi.guides import OptimizationEmbeddingGuide
from pyro_base.models.base_model import BASEModel
from pyro_base.models.relaxations import (
    Concrete,
    StraightThrough,
    categorical_kl,
    check_temperature,
    make_relaxation,
)
from pyro_base.models.temperature import (
    ConstantTemperature,
    ExponentialTemperature,
    LinearTemperature,
    make_schedule,
)
from pyro_base.search_space import SearchSpace
from pyro_base.supernet import SuperNet


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    pyro.clear_param_store()


def _tiny_model(relaxation, dtype=torch.float32, beta=0.01):
    net = SuperNet(SearchSpace.preset("tiny")).to(dtype)
    model = BASEModel(net, relaxation=relaxation, beta=beta)
    with torch.no_grad():
        for c in model.W.cells:
            model.W.alpha(c).normal_(0.0, 1.0)
    return model


def _easy_batch(n=12, n_classes=3, dtype=torch.float32):
    y = torch.arange(n) % n_classes
    x = 0.3 * torch.randn(n, 3, 8, 8, dtype=dtype)
    x[torch.arange(n), y] += 1.0  # class k brightens channel k
    return x, y


# -- the analytic categorical KL --------------------------------------------------------------

def test_categorical_kl_gradcheck():
    q = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    p = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(categorical_kl, (q, p))
    assert torch.autograd.gradgradcheck(categorical_kl, (q, p))


def test_categorical_kl_value_and_closed_form_gradient():
    torch.manual_seed(1)
    q = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    p = torch.randn(5, 8, dtype=torch.float64)
    kl = categorical_kl(q, p)
    qp, pp = q.softmax(-1), p.softmax(-1)
    torch.testing.assert_close(kl, (qp * (qp.log() - pp.log())).sum(-1))
    assert (kl > 0).all()
    assert torch.allclose(categorical_kl(p, p), torch.zeros(5, dtype=torch.float64), atol=1e-14)
    # d KL / d q_logits = q * (log q - log p - KL)   (softmax Jacobian applied to log q - log p + 1)
    (grad,) = torch.autograd.grad(kl.sum(), q)
    expected = qp * (qp.log() - pp.log() - kl[:, None])
    torch.testing.assert_close(grad, expected.detach(), rtol=1e-10, atol=1e-12)
    # d KL / d p_logits = softmax(p) - softmax(q)
    p_req = p.clone().requires_grad_(True)
    (grad_p,) = torch.autograd.grad(categorical_kl(q.detach(), p_req).sum(), p_req)
    torch.testing.assert_close(grad_p, (pp - qp).detach(), rtol=1e-10, atol=1e-12)
    # invariant to a constant shift of either logit vector
    torch.testing.assert_close(categorical_kl(q + 3.0, p - 2.0), kl)


@pytest.mark.filterwarnings("ignore:Encountered NaN")  # straight-through log_prob is NaN
@pytest.mark.parametrize("relax", [Concrete(), StraightThrough()], ids=["concrete", "st"])
def test_registered_kl_is_what_trace_mean_field_elbo_uses(relax):
    """On a model/guide pair with only a z site, -ELBO is exactly the categorical KL."""
    torch.manual_seed(2)
    p_logits, q_logits = torch.randn(5, 8), torch.randn(5, 8)

    def model():
        pyro.sample("z", relax.dist(p_logits, 0.5))

    def guide():
        pyro.sample("z", relax.dist(q_logits, 0.5))

    loss = TraceMeanField_ELBO().loss(model, guide)
    expected = float(categorical_kl(q_logits, p_logits).sum())
    assert loss == pytest.approx(expected, rel=1e-5)


def test_mc_kl_option_is_the_concrete_density_estimate():
    """``kl="mc"`` scores the log-space Concrete density: a different, noisy number."""
    torch.manual_seed(3)
    relax = Concrete(kl="mc")
    p_logits, q_logits = torch.randn(5, 8), torch.randn(5, 8)

    def model():
        pyro.sample("z", relax.dist(p_logits, 0.5))

    def guide():
        pyro.sample("z", relax.dist(q_logits, 0.5))

    losses = torch.tensor([TraceMeanField_ELBO().loss(model, guide) for _ in range(20)])
    assert torch.isfinite(losses).all()
    assert losses.std() > 1e-3  # a Monte Carlo estimate, not the analytic surrogate
    analytic = float(categorical_kl(q_logits, p_logits).sum())
    assert not torch.allclose(losses, torch.full_like(losses, analytic))


def test_elbo_kl_part_on_the_tiny_model_is_the_categorical_kl():
    """BASEModel with a posterior whose q(theta) = p(theta): -ELBO = lik/beta + sum_c KL_cat.

    With beta = 1e9 the likelihood term is ~1e-9 nats, so -ELBO is the KL part alone.
    """
    model = _tiny_model(Concrete(), dtype=torch.float64, beta=1e9)
    guide = OptimizationEmbeddingGuide(model)
    params = {k: v.detach().clone() for k, v in model.W.named_tensors().items()}
    for c in model.W.cells:
        params[f"alpha_{c}"] = params[f"alpha_{c}"] + torch.randn_like(params[f"alpha_{c}"])
    post = guide.posterior(params)
    x, y = _easy_batch(dtype=torch.float64)
    loss = guide.elbo.elbo.loss(model, post, x, y, size=x.shape[0], n_classes=3,
                                temperature=0.5)  # Pyro's -ELBO, not per datum
    expected = sum(float(categorical_kl(params[f"alpha_{c}"], model.W.alpha(c).detach()).sum())
                   for c in model.W.cells)
    assert expected > 1.0
    assert loss == pytest.approx(expected, abs=1e-6)


# -- numerics at low temperature --------------------------------------------------------------

@pytest.mark.parametrize("name", ["concrete", "straight_through"])
def test_finite_samples_elbo_and_gradients_at_tau_005(name):
    tau = 0.05
    model = _tiny_model(make_relaxation(name))  # float32, the default dtype
    guide = OptimizationEmbeddingGuide(model)
    logits = model.W.alpha("normal")
    for _ in range(50):
        v = model.relaxation.dist(logits, tau).rsample()
        assert torch.isfinite(v).all()
        w = model.relaxation.weights(v)
        assert torch.isfinite(w).all() and (w >= 0).all()
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[0]), rtol=0, atol=1e-5)
    x, y = _easy_batch()
    for _ in range(3):
        params = {k: v.detach().clone().requires_grad_(True)
                  for k, v in model.W.named_tensors().items()}
        loss = guide.loss(guide.posterior(params), x, y, size=x.shape[0], n_classes=3,
                          temperature=tau)
        assert torch.isfinite(loss)
        grads = torch.autograd.grad(loss, list(params.values()))
        for n, g in zip(params, grads, strict=True):
            assert torch.isfinite(g).all(), n
        assert any(g.abs().sum() > 0 for n, g in zip(params, grads, strict=True)
                   if n.startswith("alpha"))
    # and the inner loop stays finite at tau = 0.05
    _, losses = guide.adapt(x, y, n_classes=3, temperature=tau, steps=5)
    assert all(math.isfinite(v) for v in losses)


def test_straight_through_forward_is_exactly_one_hot_with_soft_gradient():
    relax = StraightThrough()
    logits = torch.randn(5, 8, requires_grad=True)
    d = relax.dist(logits, 0.5)
    assert d.event_shape == (5, 8)
    z = relax.weights(d.rsample())
    assert set(z.detach().unique().tolist()) <= {0.0, 1.0}
    assert (z.detach().sum(-1) == 1.0).all()
    assert ((z.detach() == 1.0).sum(-1) == 1).all()
    # gradients are those of the soft sample: non-zero and finite
    (g,) = torch.autograd.grad((z * torch.randn(5, 8)).sum(), logits)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    # a hard sample is never scored with the relaxed density
    assert torch.isnan(d.log_prob(z)).all()


def test_straight_through_supernet_runs_only_selected_ops():
    model = _tiny_model(StraightThrough())
    z = {c: model.relaxation.weights(model.relaxation.dist(model.W.alpha(c), 0.5).rsample())
         for c in model.W.cells}
    active = model.supernet.active_ops(z)
    assert all(len(ops) == 1 for rows in active.values() for ops in rows)


def test_relaxation_bad_input():
    with pytest.raises(ValueError, match="'exact'"):
        Concrete(kl="exact")
    with pytest.raises(ValueError, match="'gumbel'"):
        make_relaxation("gumbel")
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            check_temperature(bad)
        with pytest.raises(ValueError, match="temperature"):
            Concrete().dist(torch.zeros(2, 3), bad)


# -- temperature schedules --------------------------------------------------------------------

def test_constant_schedule():
    s = make_schedule("constant", start=0.7)
    assert isinstance(s, ConstantTemperature)
    assert [s(t) for t in (0, 5, 10_000)] == [0.7, 0.7, 0.7]


@pytest.mark.parametrize("kind,cls", [("linear", LinearTemperature),
                                      ("exponential", ExponentialTemperature)])
def test_annealing_schedules_endpoints_floor_monotone(kind, cls):
    s = make_schedule(kind, start=1.0, end=0.2, steps=50)
    assert isinstance(s, cls)
    assert s(0) == pytest.approx(1.0)
    assert s(50) == pytest.approx(0.2)
    values = [s(t) for t in range(-3, 200)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # monotone
    assert min(values) == pytest.approx(0.2)  # floored at end
    assert max(values) == pytest.approx(1.0)  # negative steps clamp to the start
    assert s(1000) == pytest.approx(0.2)
    mid = s(25)
    expected = 0.6 if kind == "linear" else math.sqrt(0.2)
    assert mid == pytest.approx(expected)


@pytest.mark.parametrize("kwargs", [dict(start=0.0), dict(start=-1.0), dict(end=0.0),
                                    dict(end=-0.5), dict(start=float("nan")), dict(steps=0)])
@pytest.mark.parametrize("kind", ["linear", "exponential"])
def test_schedule_value_errors(kind, kwargs):
    with pytest.raises(ValueError, match="temperature"):
        make_schedule(kind, **kwargs)


def test_schedule_value_errors_name_the_value():
    with pytest.raises(ValueError, match="-0.5"):
        ConstantTemperature(value=-0.5)
    with pytest.raises(ValueError, match="0.0"):
        make_schedule("constant", start=0.0)
    with pytest.raises(ValueError, match="'cosine'"):
        make_schedule("cosine")


def test_one_concrete_sampler_draw_for_draw_with_torchs():
    """concrete_log_sample (used by the Pyro sites and the Pyro-free ELBO) is torch's
    ExpRelaxedCategorical.rsample, draw for draw; straight_through is an exact one-hot."""
    from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

    from pyro_base.models.relaxations import concrete_log_sample, straight_through

    logits = torch.randn(5, 8, dtype=torch.float64)
    tau = torch.tensor(0.7, dtype=torch.float64)
    torch.manual_seed(3)
    ref = ExpRelaxedCategorical(tau, logits=logits).rsample()
    torch.manual_seed(3)
    ours = concrete_log_sample(logits - logits.logsumexp(-1, keepdim=True), tau)
    assert torch.equal(ours, ref)
    soft = ours.exp().requires_grad_(True)
    hard = straight_through(soft)
    assert torch.equal(hard.detach(), torch.nn.functional.one_hot(soft.argmax(-1), 8).double())
    (hard * torch.arange(8.0, dtype=torch.float64)).sum().backward()
    assert torch.equal(soft.grad, torch.arange(8.0, dtype=torch.float64).expand(5, 8))
