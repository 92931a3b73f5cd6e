"""The static-buffer inner loop (:class:`~pyro_base.inference.vi.static_loop.StaticInnerLoop`) and
the guide's
``elbo_impl="graph"``: on CPU (no capture) they return the ``elbo_impl="functional"`` inner loop
on the same RNG state, one task or ``C`` vmapped tasks with shared noise."""

import math

import pyro
import pytest
import torch

from pyro_base.inference.vi.guides import OptimizationEmbeddingGuide, finite_prefix
from pyro_base.inference.vi.static_loop import StaticInnerLoop
from pyro_base.models.base_model import BASEModel
from pyro_base.models.priors import FixedGaussianPrior
from pyro_base.models.relaxations import Concrete, StraightThrough
from pyro_base.search_space import SearchSpace
from pyro_base.supernet import SuperNet


def _model(relaxation=None, dtype=torch.float64, space=None, weight_prior=None):
    """A tiny BASE model whose supernet computes every op (the static loop never skips)."""
    torch.manual_seed(0)
    pyro.clear_param_store()
    net = SuperNet(space or SearchSpace.preset("tiny"), skip_zero=False)
    return BASEModel(net, relaxation=relaxation or Concrete(), beta=0.01,
                     weight_prior=weight_prior).to(dtype)


def _data(dtype=torch.float64, n=6, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 12, 12, generator=g, dtype=dtype), torch.randint(0, 5, (n,),
                                                                               generator=g)


def _tasks(C, n=6, dtype=torch.float64, seed=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(C, n, 3, 12, 12, generator=g, dtype=dtype), torch.randint(0, 5, (C, n),
                                                                                  generator=g)


def _adapt(model, impl, x, y, *, seed, **kwargs):
    """``guide.adapt`` with ``elbo_impl=impl`` after ``torch.manual_seed(seed)``."""
    adapt_kw = {k: kwargs.pop(k) for k in ("steps", "order", "callback") if k in kwargs}
    n_classes = kwargs.pop("n_classes", 5)
    guide = OptimizationEmbeddingGuide(model, elbo_impl=impl, **kwargs)
    torch.manual_seed(seed)
    post, losses = guide.adapt(x, y, n_classes=n_classes, temperature=0.5, **adapt_kw)
    return guide, post, losses


def _assert_losses_equal(got, expected, tol):
    """Same length; finite entries within ``tol``; non-finite entries of the same kind."""
    assert len(got) == len(expected), (got, expected)
    for a, b in zip(got, expected, strict=True):
        if math.isnan(b):
            assert math.isnan(a), (got, expected)
        elif math.isinf(b):
            assert a == b, (got, expected)
        else:
            assert a == pytest.approx(b, rel=tol, abs=tol), (got, expected)


def _assert_params_equal(got, expected, tol):
    assert set(got) == set(expected)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=tol, atol=tol,
                                   msg=lambda m, k=k: f"{k}: {m}")


# -- 1. graph == functional ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)],
                         ids=["float64", "float32"])
@pytest.mark.parametrize("weight_posterior", ["gaussian", "delta"])
@pytest.mark.parametrize("batch_size", [None, 6], ids=["full", "sub6"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_graph_adapt_equals_functional(dtype, tol, weight_posterior, batch_size, optimizer):
    model = _model(Concrete(), dtype)
    x, y = _data(dtype, n=10 if batch_size else 6)
    kw = dict(inner_steps=4, inner_lr=0.05 if optimizer == "adam" else 0.5,
              weight_posterior=weight_posterior, inner_optimizer=optimizer,
              batch_size=batch_size)
    _, ref, ref_losses = _adapt(model, "functional", x, y, seed=2, **kw)
    after_ref = torch.rand(3)
    guide, post, losses = _adapt(model, "graph", x, y, seed=2, **kw)
    # the RNG advanced exactly as much on both paths
    torch.testing.assert_close(torch.rand(3), after_ref, rtol=0, atol=0)
    assert len(guide._static_loops) == 1  # the static loop ran, not the eager one
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    _assert_losses_equal(losses, ref_losses, tol)
    _assert_params_equal(post.params, ref.params, tol)
    for k, v in post.params.items():
        assert v.dtype == dtype and not v.requires_grad
        # the loop moved the posterior away from W (except log_sigma of a delta posterior)
        moved = not torch.equal(v, model.W.named_tensors()[k].detach())
        assert moved == (not (k == "log_sigma" and weight_posterior == "delta")), k
    assert post.weight_posterior == weight_posterior


def test_graph_adapt_equals_functional_without_momentum():
    """``inner_beta1=0`` (Adam without momentum) on both paths: the static loop's bias
    corrections follow the guide's beta1."""
    model = _model(Concrete(), torch.float64)
    x, y = _data(torch.float64, n=8)
    kw = dict(inner_steps=4, inner_lr=0.05, batch_size=5, inner_beta1=0.0)
    _, ref, ref_losses = _adapt(model, "functional", x, y, seed=5, **kw)
    guide, post, losses = _adapt(model, "graph", x, y, seed=5, **kw)
    assert guide.update.beta1 == 0.0 and len(guide._static_loops) == 1
    _assert_losses_equal(losses, ref_losses, 1e-10)
    _assert_params_equal(post.params, ref.params, 1e-10)
    _, momentum, _ = _adapt(model, "functional", x, y, seed=5, **{**kw, "inner_beta1": 0.9})
    assert not torch.equal(momentum.params["mu"], ref.params["mu"])


@pytest.mark.parametrize("batch_size", [None, 4])
def test_graph_adapt_equals_functional_straight_through(batch_size):
    model = _model(StraightThrough(), torch.float64)
    x, y = _data(torch.float64, n=8)
    kw = dict(inner_steps=4, inner_lr=0.05, batch_size=batch_size)
    _, ref, ref_losses = _adapt(model, "functional", x, y, seed=7, **kw)
    _, post, losses = _adapt(model, "graph", x, y, seed=7, **kw)
    _assert_losses_equal(losses, ref_losses, 1e-10)
    _assert_params_equal(post.params, ref.params, 1e-10)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)],
                         ids=["float64", "float32"])
def test_graph_adapt_equals_functional_fixed_prior_other_temperature(dtype, tol):
    """A fixed weight prior, and a temperature that is not exact in binary (a 0-d buffer on
    the graph path, a Python float on the functional one)."""
    model = _model(Concrete(), dtype, weight_prior=FixedGaussianPrior(scale=0.1))
    x, y = _data(dtype, n=8)
    results = []
    for impl in ("functional", "graph"):
        guide = OptimizationEmbeddingGuide(model, inner_steps=4, inner_lr=0.05, batch_size=5,
                                           elbo_impl=impl)
        torch.manual_seed(3)
        results.append(guide.adapt(x, y, n_classes=4, temperature=0.3))
    (ref, ref_losses), (post, losses) = results
    _assert_losses_equal(losses, ref_losses, tol)
    _assert_params_equal(post.params, ref.params, tol)


def test_graph_adapt_with_callback_runs_eager_loop():
    """A callback needs per-step host values: the eager loop runs (and agrees)."""
    model = _model()
    x, y = _data()
    seen = []
    _, ref, ref_losses = _adapt(model, "functional", x, y, seed=1, inner_steps=3)
    guide, post, losses = _adapt(model, "graph", x, y, seed=1, inner_steps=3,
                                 callback=lambda t, v: seen.append((t, v)))
    assert guide._static_loops == {}
    assert seen == list(enumerate(losses, start=1))
    _assert_losses_equal(losses, ref_losses, 1e-10)
    _assert_params_equal(post.params, ref.params, 1e-10)


# -- 2. non-finite losses -----------------------------------------------------------------------
def _with_bad_sample(value, n=6, index=0):
    x, y = _data(torch.float64, n=n)
    x[index, 0, 3, 3] = value
    return x, y


@pytest.mark.parametrize("bad", [math.inf, math.nan], ids=["inf", "nan"])
def test_non_finite_support_sample_truncates_like_functional(bad):
    """A bad image drawn into a later minibatch: both loops stop at that step's loss."""
    model = _model()
    x, y = _with_bad_sample(bad)
    kw = dict(inner_steps=12, inner_lr=0.05, batch_size=2)
    _, ref, ref_losses = _adapt(model, "functional", x, y, seed=0, **kw)
    # the seed is chosen so that the loop takes some finite steps, then fails before the end
    assert 2 <= len(ref_losses) < 12, ref_losses
    assert all(math.isfinite(v) for v in ref_losses[:-1]) and math.isnan(ref_losses[-1])
    _, post, losses = _adapt(model, "graph", x, y, seed=0, **kw)
    _assert_losses_equal(losses, ref_losses, 1e-10)
    _assert_params_equal(post.params, ref.params, 1e-10)
    assert all(torch.isfinite(v).all() for v in post.params.values())


def test_non_finite_first_step_returns_W():
    model = _model()
    x, y = _with_bad_sample(math.nan)
    _, ref, ref_losses = _adapt(model, "functional", x, y, seed=0, inner_steps=3)
    _, post, losses = _adapt(model, "graph", x, y, seed=0, inner_steps=3)
    assert len(losses) == 1 and math.isnan(losses[0]) and len(ref_losses) == 1
    W = {k: v.detach() for k, v in model.W.named_tensors().items()}
    _assert_params_equal(post.params, W, 0)
    _assert_params_equal(ref.params, W, 0)


@pytest.mark.parametrize("lr", [1e6, 1e30])
def test_diverging_inner_lr_truncates_like_functional(lr):
    """Plain SGD with a huge step: the loss blows up after the first update."""
    model = _model()
    x, y = _data()
    kw = dict(inner_steps=5, inner_lr=lr, inner_optimizer="sgd")
    _, ref, ref_losses = _adapt(model, "functional", x, y, seed=3, **kw)
    assert 2 <= len(ref_losses) < 5 and not math.isfinite(ref_losses[-1]), ref_losses
    _, post, losses = _adapt(model, "graph", x, y, seed=3, **kw)
    _assert_losses_equal(losses, ref_losses, 1e-10)
    for k, v in ref.params.items():  # the parameters the non-finite loss was computed at
        torch.testing.assert_close(post.params[k], v, rtol=1e-10, atol=1e-10, equal_nan=True)


def test_run_pads_losses_after_failure_with_nan():
    """``run`` reports every step; a task's entries after its first bad loss are NaN."""
    model = _model()
    x, y = _with_bad_sample(math.inf)
    guide = OptimizationEmbeddingGuide(model, inner_steps=12, inner_lr=0.05, batch_size=2,
                                       elbo_impl="graph")
    loop = guide.static_loop(x_shape=tuple(x.shape[1:]), size=6, tasks=None,
                             device=x.device, dtype=torch.float64)
    torch.manual_seed(0)
    params, losses = loop.run(model.W.named_tensors(), x, y, n_classes=5, temperature=0.5)
    assert losses.shape == (12,)
    prefix = finite_prefix(losses.tolist())
    k = len(prefix)
    assert 2 <= k < 12
    assert torch.isfinite(losses[:k - 1]).all() and torch.isnan(losses[k - 1:]).all()


def test_finite_prefix():
    assert finite_prefix([]) == []
    assert finite_prefix([1.0, 2.0]) == [1.0, 2.0]
    out = finite_prefix([1.0, math.nan, 3.0, math.nan])
    assert out[0] == 1.0 and math.isnan(out[1]) and len(out) == 2
    assert finite_prefix([math.inf, 1.0]) == [math.inf]
    assert finite_prefix([2.0, -math.inf, math.nan]) == [2.0, -math.inf]


def test_loop_reuse_after_failure_resets_state():
    """A cached loop that failed on one support set adapts the next one from scratch."""
    model = _model()
    kw = dict(inner_steps=4, inner_lr=0.05)
    x, y = _data()
    _, ref, ref_losses = _adapt(model, "functional", x, y, seed=1, **kw)
    guide = OptimizationEmbeddingGuide(model, elbo_impl="graph", **kw)
    bad_x, _ = _with_bad_sample(math.nan)
    torch.manual_seed(1)
    _, bad_losses = guide.adapt(bad_x, y, n_classes=5, temperature=0.5)
    assert len(bad_losses) == 1 and math.isnan(bad_losses[0])
    torch.manual_seed(1)
    post, losses = guide.adapt(x, y, n_classes=5, temperature=0.5)
    assert len(guide._static_loops) == 1
    _assert_losses_equal(losses, ref_losses, 1e-10)
    _assert_params_equal(post.params, ref.params, 1e-10)


# -- 3./4. vmapped tasks ------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer,weight_posterior",
                         [("adam", "gaussian"), ("sgd", "gaussian"), ("adam", "delta")])
def test_tasks_equal_sequential_with_shared_noise(optimizer, weight_posterior):
    """vmap over tasks == the guide's loop per task, when every task sees the same noise.

    Full batch (batch == size): a step draws no permutation, only the posterior noise
    (``eps`` for theta, then one uniform per cell type), shared by the C tasks; so a one-task
    loop started from the same seed makes exactly the same draws.
    """
    model = _model()
    guide = OptimizationEmbeddingGuide(model, inner_steps=3, elbo_impl="functional",
                                       inner_optimizer=optimizer,
                                       weight_posterior=weight_posterior,
                                       inner_lr=0.01 if optimizer == "adam" else 0.1)
    xs, ys = _tasks(3)
    loop = StaticInnerLoop(guide, x_shape=(3, 12, 12), size=6, batch=6, tasks=3,
                           randomness="same")
    torch.manual_seed(5)
    params, losses = loop.run(model.W.named_tensors(), xs, ys, n_classes=5, temperature=0.5)
    assert losses.shape == (3, 3)
    assert all(params[k].shape == (3, *v.shape) for k, v in model.W.named_tensors().items())
    for c in range(3):
        torch.manual_seed(5)
        post, seq_losses = guide.adapt(xs[c], ys[c], n_classes=5, temperature=0.5)
        torch.testing.assert_close(losses[:, c], torch.tensor(seq_losses, dtype=torch.float64),
                                   rtol=1e-10, atol=1e-12)
        for k, v in post.params.items():
            torch.testing.assert_close(params[k][c], v, rtol=1e-10, atol=1e-12)
    # different tasks end at different posteriors
    assert not torch.allclose(params["mu"][0], params["mu"][1])


def test_tasks_straight_through_equal_sequential_with_shared_noise():
    model = _model(StraightThrough())
    guide = OptimizationEmbeddingGuide(model, inner_steps=2, elbo_impl="functional")
    xs, ys = _tasks(2)
    loop = StaticInnerLoop(guide, x_shape=(3, 12, 12), size=6, batch=6, tasks=2,
                           randomness="same")
    torch.manual_seed(5)
    params, losses = loop.run(model.W.named_tensors(), xs, ys, n_classes=5, temperature=0.5)
    for c in range(2):
        torch.manual_seed(5)
        post, seq_losses = guide.adapt(xs[c], ys[c], n_classes=5, temperature=0.5)
        torch.testing.assert_close(losses[:, c], torch.tensor(seq_losses, dtype=torch.float64),
                                   rtol=1e-10, atol=1e-12)
        _assert_params_equal({k: v[c] for k, v in params.items()}, post.params, 1e-10)


def test_one_task_vmapped_subsampled_equals_sequential():
    """``tasks=1`` with a minibatch: one permutation, then the noise, as the one-task loop."""
    model = _model()
    guide = OptimizationEmbeddingGuide(model, inner_steps=3, batch_size=3,
                                       elbo_impl="functional")
    xs, ys = _tasks(1, n=8)
    loop = StaticInnerLoop(guide, x_shape=(3, 12, 12), size=8, batch=3, tasks=1,
                           randomness="same")
    torch.manual_seed(6)
    params, losses = loop.run(model.W.named_tensors(), xs, ys, n_classes=5, temperature=0.5)
    torch.manual_seed(6)
    post, seq_losses = guide.adapt(xs[0], ys[0], n_classes=5, temperature=0.5)
    torch.testing.assert_close(losses[:, 0], torch.tensor(seq_losses, dtype=torch.float64),
                               rtol=1e-10, atol=1e-12)
    _assert_params_equal({k: v[0] for k, v in params.items()}, post.params, 1e-10)


def test_tasks_one_failing_task_keeps_start_others_continue():
    model = _model()
    guide = OptimizationEmbeddingGuide(model, inner_steps=3, elbo_impl="functional")
    xs, ys = _tasks(2)
    xs[0, 2, 1, 4, 4] = math.nan
    loop = StaticInnerLoop(guide, x_shape=(3, 12, 12), size=6, batch=6, tasks=2,
                           randomness="same")
    torch.manual_seed(5)
    params, losses = loop.run(model.W.named_tensors(), xs, ys, n_classes=5, temperature=0.5)
    assert torch.isnan(losses[:, 0]).all()
    assert torch.isfinite(losses[:, 1]).all()
    W = model.W.named_tensors()
    _assert_params_equal({k: v[0] for k, v in params.items()},
                         {k: v.detach() for k, v in W.items()}, 0)
    torch.manual_seed(5)
    post, seq_losses = guide.adapt(xs[1], ys[1], n_classes=5, temperature=0.5)
    torch.testing.assert_close(losses[:, 1], torch.tensor(seq_losses, dtype=torch.float64),
                               rtol=1e-10, atol=1e-12)
    _assert_params_equal({k: v[1] for k, v in params.items()}, post.params, 1e-10)


@pytest.mark.parametrize("batch", [6, 3])
def test_tasks_different_randomness_draws_per_task_noise(batch):
    model = _model()
    guide = OptimizationEmbeddingGuide(model, inner_steps=3, inner_lr=0.05,
                                       elbo_impl="functional")
    x, y = _data()
    xs, ys = x.expand(2, *x.shape).clone(), y.expand(2, *y.shape).clone()  # identical tasks
    loop = StaticInnerLoop(guide, x_shape=(3, 12, 12), size=6, batch=batch,
                           tasks=2, randomness="different")
    torch.manual_seed(0)
    params, losses = loop.run(model.W.named_tensors(), xs, ys, n_classes=5, temperature=0.5)
    assert losses.shape == (3, 2) and torch.isfinite(losses).all()
    assert all(torch.isfinite(v).all() for v in params.values())
    assert losses[0, 0] != losses[0, 1]  # different noise from the first step on
    for k in ("mu", "alpha_normal", "alpha_reduce", "log_sigma"):
        assert not torch.allclose(params[k][0], params[k][1]), k
    # with shared noise (and a full batch) the two identical tasks stay identical
    same = StaticInnerLoop(guide, x_shape=(3, 12, 12), size=6, batch=6, tasks=2,
                           randomness="same")
    p_same, l_same = same.run(model.W.named_tensors(), xs, ys, n_classes=5, temperature=0.5)
    assert torch.equal(l_same[:, 0], l_same[:, 1])
    for v in p_same.values():
        torch.testing.assert_close(v[0], v[1], rtol=0, atol=0)


# -- 5. errors ----------------------------------------------------------------------------------
def test_errors():
    model = _model()
    guide = OptimizationEmbeddingGuide(model, inner_steps=2, elbo_impl="graph")
    kw = dict(x_shape=(3, 12, 12), size=6)
    with pytest.raises(ValueError, match="CUDA"):
        StaticInnerLoop(guide, batch=6, capture=True, **kw)
    with pytest.raises(ValueError, match="batch"):
        StaticInnerLoop(guide, batch=7, **kw)
    with pytest.raises(ValueError, match="batch"):
        StaticInnerLoop(guide, batch=0, **kw)
    with pytest.raises(ValueError, match="tasks"):
        StaticInnerLoop(guide, batch=6, tasks=0, **kw)

    loop = StaticInnerLoop(guide, batch=6, **kw)
    x, y = _data()
    W = model.W.named_tensors()
    with pytest.raises(ValueError, match="x and y must be"):
        loop.run(W, x[:5], y[:5], n_classes=5, temperature=0.5)  # wrong support size
    with pytest.raises(ValueError, match="x and y must be"):
        loop.run(W, x, y[:5], n_classes=5, temperature=0.5)
    with pytest.raises(ValueError, match="x and y must be"):
        loop.run(W, x[:, :, :8, :8], y, n_classes=5, temperature=0.5)  # wrong image shape
    with pytest.raises(ValueError, match="x and y must be"):
        loop.run(W, x[None], y[None], n_classes=5, temperature=0.5)  # a task axis, one-task loop
    with pytest.raises(ValueError, match="temperature"):
        loop.run(W, x, y, n_classes=5, temperature=0.0)
    with pytest.raises(ValueError, match="float64"):
        loop.run(W, x.float(), y, n_classes=5, temperature=0.5)  # as the functional loop does
    tasks_loop = StaticInnerLoop(guide, batch=6, tasks=2, **kw)
    with pytest.raises(ValueError, match="x and y must be"):
        tasks_loop.run(W, x, y, n_classes=5, temperature=0.5)  # missing the task axis
    with pytest.raises(ValueError, match="x and y must be"):
        tasks_loop.run(W, x.expand(3, *x.shape), y.expand(3, *y.shape), n_classes=5,
                       temperature=0.5)

    running = _model(space=SearchSpace.preset("tiny", track_running_stats=True))
    running_guide = OptimizationEmbeddingGuide(running, elbo_impl="graph")
    with pytest.raises(ValueError, match="track_running_stats"):
        StaticInnerLoop(running_guide, batch=6, tasks=2, **kw)
    StaticInnerLoop(running_guide, batch=6, **kw)  # one task is fine

    unsupported = _model(Concrete(kl="mc"))
    with pytest.raises(ValueError, match="elbo_impl='pyro'"):
        OptimizationEmbeddingGuide(unsupported, elbo_impl="graph")
    with pytest.raises(ValueError, match="elbo_impl='pyro'"):
        StaticInnerLoop(OptimizationEmbeddingGuide(unsupported), batch=6, **kw)
    with pytest.raises(ValueError, match="empty support"):
        guide.adapt(x[:0], y[:0], n_classes=5, temperature=0.5)


def test_guide_batch_larger_than_support_is_clamped():
    """``batch_size > N`` uses the whole support set (as the functional loop does)."""
    model = _model()
    x, y = _data()
    _, ref, ref_losses = _adapt(model, "functional", x, y, seed=4, inner_steps=2,
                                batch_size=32)
    guide, post, losses = _adapt(model, "graph", x, y, seed=4, inner_steps=2, batch_size=32)
    (loop,) = guide._static_loops.values()
    assert loop.batch == loop.size == 6
    _assert_losses_equal(losses, ref_losses, 1e-10)
    _assert_params_equal(post.params, ref.params, 1e-10)


# -- 6. caching, first order --------------------------------------------------------------------
def test_guide_caches_one_loop_per_shape():
    model = _model()
    guide = OptimizationEmbeddingGuide(model, inner_steps=2, elbo_impl="graph")
    x, y = _data(n=6)
    guide.adapt(x, y, n_classes=5, temperature=0.5)
    (loop,) = guide._static_loops.values()
    x2, y2 = _data(n=6, seed=8)
    guide.adapt(x2, y2, n_classes=5, temperature=0.7)  # another task, another temperature
    assert len(guide._static_loops) == 1
    assert next(iter(guide._static_loops.values())) is loop
    x3, y3 = _data(n=4)
    guide.adapt(x3, y3, n_classes=5, temperature=0.5)
    assert len(guide._static_loops) == 2
    # another class count reuses the loop (a class mask), and gives the functional result
    _, ref3, ref3_losses = _adapt(model, "functional", x, y % 3, seed=10, inner_steps=2,
                                  n_classes=3)
    torch.manual_seed(10)
    post3, losses3 = guide.adapt(x, y % 3, n_classes=3, temperature=0.5)
    assert len(guide._static_loops) == 2
    _assert_losses_equal(losses3, ref3_losses, 1e-10)
    _assert_params_equal(post3.params, ref3.params, 1e-10)
    assert guide.static_loop(x_shape=(3, 12, 12), size=6, tasks=None,
                             device=x.device, dtype=torch.float64) is loop
    assert not loop.capture  # CPU: eager
    # a cached loop gives the functional result for the second task and temperature too
    _, ref, ref_losses = _adapt(model, "functional", x2, y2, seed=9, inner_steps=2)
    torch.manual_seed(9)
    post, losses = guide.adapt(x2, y2, n_classes=5, temperature=0.5)
    _assert_losses_equal(losses, ref_losses, 1e-10)
    _assert_params_equal(post.params, ref.params, 1e-10)


def test_graph_first_order_runs_eager_loop_with_gradients_to_W():
    model = _model()
    x, y = _data()
    _, ref, ref_losses = _adapt(model, "functional", x, y, seed=2, inner_steps=3,
                                order="first")
    guide, post, losses = _adapt(model, "graph", x, y, seed=2, inner_steps=3, order="first")
    assert guide._static_loops == {}
    assert post.params["mu"].requires_grad
    _assert_losses_equal(losses, ref_losses, 1e-10)
    _assert_params_equal({k: v.detach() for k, v in post.params.items()},
                         {k: v.detach() for k, v in ref.params.items()}, 1e-10)
    g_mu, g_alpha = torch.autograd.grad(
        post.params["mu"].sum() + post.params["alpha_normal"].sum(),
        [model.W.mu, model.W.alpha("normal")])
    torch.testing.assert_close(g_mu, torch.ones_like(model.W.mu))  # d phi_T / d W = I
    torch.testing.assert_close(g_alpha, torch.ones_like(g_alpha))
    # order="none" on the same guide is detached
    post_none, _ = guide.adapt(x, y, n_classes=5, temperature=0.5)
    assert not any(v.requires_grad for v in post_none.params.values())
    assert len(guide._static_loops) == 1


# -- 7. zero steps ------------------------------------------------------------------------------
def test_zero_steps_returns_W():
    model = _model()
    x, y = _data()
    guide = OptimizationEmbeddingGuide(model, inner_steps=3, elbo_impl="graph")
    state = torch.random.get_rng_state()
    post, losses = guide.adapt(x, y, n_classes=5, temperature=0.5, steps=0)
    assert losses == []
    assert torch.equal(torch.random.get_rng_state(), state)  # no draws
    W = {k: v.detach() for k, v in model.W.named_tensors().items()}
    _assert_params_equal(post.params, W, 0)
    assert not any(v.requires_grad for v in post.params.values())

    loop = StaticInnerLoop(guide, x_shape=(3, 12, 12), size=6, batch=6, tasks=2)
    xs, ys = _tasks(2)
    params, losses = loop.run(model.W.named_tensors(), xs, ys, n_classes=5, temperature=0.5,
                              steps=0)
    assert losses.shape == (0, 2)
    for k, v in W.items():
        assert torch.equal(params[k], v.expand(2, *v.shape))


def test_tasks_with_different_class_counts_equal_sequential_with_shared_noise():
    """One vmapped loop serves tasks of 3 and 5 classes (a class mask per task)."""
    model = _model()
    guide = OptimizationEmbeddingGuide(model, inner_steps=3, elbo_impl="functional")
    xs, ys = _tasks(2)
    ys = torch.stack([ys[0] % 3, ys[1]])
    loop = StaticInnerLoop(guide, x_shape=(3, 12, 12), size=6, batch=6, tasks=2,
                           randomness="same")
    torch.manual_seed(5)
    params, losses = loop.run(model.W.named_tensors(), xs, ys, n_classes=[3, 5],
                              temperature=0.5)
    for c, n_classes in enumerate((3, 5)):
        torch.manual_seed(5)
        post, seq_losses = guide.adapt(xs[c], ys[c], n_classes=n_classes, temperature=0.5)
        _assert_losses_equal(losses[:, c].tolist(), seq_losses, 1e-10)
        _assert_params_equal({k: v[c] for k, v in params.items()}, post.params, 1e-10)
    for bad in ([3, 5, 5], [1, 5], [3, 6], 2.5, True):
        with pytest.raises(ValueError, match="n_classes"):
            loop.run(model.W.named_tensors(), xs, ys, n_classes=bad, temperature=0.5)


def test_hard_samples_on_a_zero_skipping_supernet_are_refused():
    """Computing every op would silently turn GDAS' estimator into the full straight-through."""
    from pyro_base.inference.run.config import ConfigError, MetaConfig
    from pyro_base.inference.vi.meta_svi import MetaSVI

    torch.manual_seed(0)
    gdas = BASEModel(SuperNet(SearchSpace.preset("tiny")), relaxation=StraightThrough(),
                     beta=0.01).double()
    with pytest.raises(ValueError, match="skip_zero"):
        OptimizationEmbeddingGuide(gdas, elbo_impl="graph")
    functional = OptimizationEmbeddingGuide(gdas, elbo_impl="functional")
    with pytest.raises(ValueError, match="skip_zero"):
        MetaSVI(gdas, functional, batch_tasks=True)
    with pytest.raises(ValueError, match="skip_zero"):
        StaticInnerLoop(functional, x_shape=(3, 12, 12), size=6, batch=6)
    for kw in (dict(elbo_impl="graph"), dict(elbo_impl="functional", batch_tasks=True)):
        with pytest.raises(ConfigError, match="straight_through"):
            MetaConfig(relaxation="straight_through", **kw)
    assert MetaConfig(relaxation="straight_through", elbo_impl="functional").elbo_impl
