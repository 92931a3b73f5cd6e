"""BASEModel: sites and scales, the ELBO gradient w.r.t. the relaxed-categorical logits
(finite differences with common random numbers, and the closed form of its KL part), bad input."""


import pyro
import pytest
import torch
from pyro import poutine

from pyro_base.inference.vi.guides import OptimizationEmbeddingGuide
from pyro_base.models.base_model import BASEModel
from pyro_base.models.priors import MetaParams
from pyro_base.models.relaxations import Concrete, categorical_kl
from pyro_base.search_space import SearchSpace
from pyro_base.supernet import SuperNet


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    pyro.clear_param_store()


def _tiny_model(dtype=torch.float64, beta=0.01, **kwargs):
    net = SuperNet(SearchSpace.preset("tiny")).to(dtype)
    model = BASEModel(net, beta=beta, **kwargs)
    with torch.no_grad():
        for c in model.W.cells:
            model.W.alpha(c).normal_(0.0, 1.0)
    return model


def _easy_batch(n=10, n_classes=3, dtype=torch.float64):
    y = torch.arange(n) % n_classes
    x = 0.3 * torch.randn(n, 3, 8, 8, dtype=dtype)
    x[torch.arange(n), y] += 1.0
    return x, y


def test_sites_shapes_and_scales():
    model = _tiny_model(beta=0.25)
    space = model.space
    x, y = _easy_batch(n=6)
    tr = poutine.trace(model).get_trace(x, y, size=24, n_classes=3, temperature=0.5)
    tr = poutine.util.prune_subsample_sites(tr)
    sites = [n for n, s in tr.nodes.items() if s["type"] == "sample"]
    assert sites == ["theta", "z_normal", "z_reduce", "y"] == [*model.site_names, "y"]
    assert tr.nodes["theta"]["fn"].event_shape == (model.spec.size,)
    for c in space.cell_types:
        assert tr.nodes[f"z_{c}"]["fn"].event_shape == space.z_shape == (5, 8)
    # subsampled plate scales the batch to the task size; 1/beta tempers the likelihood
    assert tr.nodes["y"]["scale"] == pytest.approx((24 / 6) / 0.25)
    assert tr.nodes["theta"]["scale"] == 1.0
    out = tr.nodes["_RETURN"]["value"]
    assert out.shape == (6, 3) and torch.isfinite(out).all()


def test_beta_tempers_only_the_likelihood():
    x, y = _easy_batch(n=6)
    model = _tiny_model(beta=1.0)
    lp = {}
    for beta in (1.0, 0.1):
        model.beta = beta
        torch.manual_seed(5)
        with torch.no_grad():
            tr = poutine.trace(model).get_trace(x, y, n_classes=3, temperature=0.5)
            tr.compute_log_prob()
        lp[beta] = {n: float(tr.nodes[n]["log_prob_sum"]) for n in ("theta", "z_normal", "y")}
    assert lp[0.1]["y"] == pytest.approx(10 * lp[1.0]["y"], rel=1e-10)
    assert lp[0.1]["theta"] == pytest.approx(lp[1.0]["theta"], rel=1e-10)
    assert lp[0.1]["z_normal"] == pytest.approx(lp[1.0]["z_normal"], rel=1e-10)


def test_elbo_gradient_wrt_logits_matches_finite_differences():
    """d(-ELBO)/d phi by autograd vs central differences, float64, common random numbers.

    Reseeding before every evaluation fixes the Gumbel and Gaussian noise, so the one-sample
    loss is a smooth deterministic function of the logits (log-space Concrete, analytic KL).
    Central differences with h = 1e-5 have error O(h^2 f''') ~ 1e-9 here, so rtol 1e-5.
    """
    model = _tiny_model()
    guide = OptimizationEmbeddingGuide(model)
    x, y = _easy_batch()
    base = {k: v.detach().clone() for k, v in model.W.named_tensors().items()}
    base["alpha_normal"] += 0.5 * torch.randn_like(base["alpha_normal"])  # q != p: KL term live

    def loss_at(alpha_normal, alpha_reduce):
        params = dict(base, alpha_normal=alpha_normal, alpha_reduce=alpha_reduce)
        torch.manual_seed(123)
        return guide.loss(guide.posterior(params), x, y, size=40, n_classes=3, temperature=0.7)

    a_n = base["alpha_normal"].clone().requires_grad_(True)
    a_r = base["alpha_reduce"].clone().requires_grad_(True)
    g_n, g_r = torch.autograd.grad(loss_at(a_n, a_r), [a_n, a_r])
    assert g_n.abs().max() > 1e-4 and g_r.abs().max() > 1e-4
    h = 1e-5
    checked = 0
    for which, grad in (("normal", g_n), ("reduce", g_r)):
        for e, k in ((0, 0), (1, 3), (2, 5), (4, 7), (3, 1)):
            an, ar = base["alpha_normal"].clone(), base["alpha_reduce"].clone()
            target = an if which == "normal" else ar
            target[e, k] += h
            up = float(loss_at(an, ar).detach())
            target[e, k] -= 2 * h
            down = float(loss_at(an, ar).detach())
            fd = (up - down) / (2 * h)
            assert fd == pytest.approx(float(grad[e, k]), rel=1e-5, abs=1e-9), (which, e, k)
            checked += 1
    assert checked == 10


def test_kl_part_gradient_matches_closed_form_on_the_model():
    """With the likelihood switched off (beta = 1e9), d(-ELBO)/d phi_c is the closed form
    ``q (log q - log p - KL)`` per edge of the analytic categorical KL."""
    model = _tiny_model(beta=1e9)
    guide = OptimizationEmbeddingGuide(model)
    x, y = _easy_batch()
    params = {k: v.detach().clone() for k, v in model.W.named_tensors().items()}
    for c in model.W.cells:
        params[f"alpha_{c}"] = (params[f"alpha_{c}"] + torch.randn(5, 8, dtype=torch.float64)
                                ).requires_grad_(True)
    loss = guide.elbo.elbo.differentiable_loss(model, guide.posterior(params), x, y, n_classes=3,
                                          temperature=0.5)
    grads = torch.autograd.grad(loss, [params[f"alpha_{c}"] for c in model.W.cells])
    for c, g in zip(model.W.cells, grads, strict=True):
        q = params[f"alpha_{c}"].detach().softmax(-1)
        p = model.W.alpha(c).detach().softmax(-1)
        kl = categorical_kl(params[f"alpha_{c}"].detach(), model.W.alpha(c).detach())
        expected = q * (q.log() - p.log() - kl[:, None])
        torch.testing.assert_close(g, expected, rtol=1e-6, atol=1e-8)


def test_model_bad_input():
    net = SuperNet(SearchSpace.preset("tiny"))
    for beta in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="beta"):
            BASEModel(net, beta=beta)
    model = BASEModel(net)
    x, y = torch.randn(4, 3, 8, 8), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="n_classes.*7"):
        model(x, y, n_classes=7)
    with pytest.raises(ValueError, match="size.*2"):
        model(x, y, size=2, n_classes=3)
    with pytest.raises(ValueError, match="temperature"):
        model(x, y, n_classes=3, temperature=0.0)
    other = MetaParams.from_supernet(SuperNet(SearchSpace.preset("tiny", channels=6)))
    with pytest.raises(ValueError, match="weights"):
        BASEModel(net, W=other)
    bad_alpha = MetaParams(model.W.mu, model.W.log_sigma,
                           {"normal": torch.zeros(4, 8), "reduce": torch.zeros(5, 8)})
    with pytest.raises(ValueError, match=r"alpha_normal.*\(4, 8\)"):
        BASEModel(net, W=bad_alpha)
    with pytest.raises(ValueError, match="init_scale"):
        MetaParams.from_supernet(net, init_scale=-0.1)


def test_w_is_held_unless_learn_prior_in_svi():
    x, y = _easy_batch(n=4, dtype=torch.float32)
    held = _tiny_model(dtype=torch.float32)
    held(x, y, n_classes=3)
    assert len(pyro.get_param_store()) == 0
    learned = _tiny_model(dtype=torch.float32, learn_prior_in_svi=True)
    learned(x, y, n_classes=3)
    names = set(pyro.get_param_store().keys())
    assert {"W$$$mu", "W$$$log_sigma", "W$$$alpha_normal"} <= names
    # the store holds W's own tensors, so an optimizer on the store moves W itself
    assert pyro.get_param_store()["W$$$mu"] is learned.W.mu
    assert not any(n.startswith("supernet") for n in names)


def test_default_relaxation_is_log_space_concrete_with_analytic_kl():
    model = _tiny_model()
    assert isinstance(model.relaxation, Concrete) and model.relaxation.kl == "analytic"
