"""MetaSVI: the Reptile update is Algorithm 1 to the last bit, MAML runs, NaN policies, resume,
and bad arguments. Tiny search space, hand-made tasks."""

import math

import numpy as np
import pyro
import pytest
import torch

from pyro_base.inference.vi.guides import OptimizationEmbeddingGuide
from pyro_base.inference.vi.meta_svi import MetaSVI, NonFiniteLossError, task_seed
from pyro_base.models.base_model import BASEModel
from pyro_base.search_space import SearchSpace
from pyro_base.supernet import SuperNet
from pyro_base.tasks.base import Task

# Pyro's own warning for a NaN log-density, expected in the NaN-policy tests
pytestmark = pytest.mark.filterwarnings("ignore:Encountered NaN:UserWarning")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    pyro.clear_param_store()


def _easy_task(seed, n=8, n_classes=3, name=None):
    g = torch.Generator().manual_seed(seed)

    def split():
        y = torch.arange(n) % n_classes
        x = 0.5 * torch.randn(n, 3, 8, 8, generator=g)
        x[torch.arange(n), y] += 1.0  # class k brightens channel k
        return x, y

    return Task(name=name or f"easy{seed}", n_classes=n_classes, support=split(),
                query=split(), metadata={"family": "easy"})


def _nan_task():
    task = _easy_task(99, name="nan")
    xs = task.support[0].clone()
    xs[0, 0, 0, 0] = float("nan")
    return Task(name="nan", n_classes=3, support=(xs, task.support[1]), query=task.query)


class EasyTasks:
    """A minimal TaskDistribution: a task is a pure function of the rng state."""

    name = "easy"

    def sample(self, split, rng):
        return _easy_task(int(rng.integers(2**31)))

    def tasks(self, split, n):
        return iter([_easy_task(1000 + i) for i in range(n)])


def _setup(inner_steps=2, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = BASEModel(SuperNet(SearchSpace.preset("tiny")), beta=0.01)
    with torch.no_grad():
        model.W.alpha("normal").normal_(0.0, 0.5)
    guide = OptimizationEmbeddingGuide(model, inner_steps=inner_steps)
    return model, guide


def _W(model):
    return {n: p.detach().clone() for n, p in model.W.named_tensors().items()}


def _adapted_by_hand(guide, tasks, *, seed, step, tau):
    out = []
    for c, task in enumerate(tasks):
        if task is None:
            continue
        torch.manual_seed(task_seed(seed, step, c))
        post, _ = guide.adapt(*task.support, n_classes=task.n_classes, temperature=tau,
                              order="none")
        out.append(post.params)
    return out


def test_reptile_step_is_algorithm_1():
    """W <- W + lambda * mean_c(adapted_c - W) with meta_optimizer = SGD(lr=lambda) (with
    ``arch_update="reptile"`` for the logits too: the poster's Algorithm 1 to the letter)."""
    lam, seed, tau = 0.3, 5, 0.7
    model, guide = _setup()
    tasks = [_easy_task(1), _easy_task(2), _easy_task(3)]
    W0 = _W(model)
    adapted = _adapted_by_hand(guide, tasks, seed=seed, step=0, tau=tau)
    assert _W(model).keys() == adapted[0].keys()
    expected = {n: W0[n] + lam * torch.stack([a[n] - W0[n] for a in adapted]).mean(0)
                for n in W0}
    svi = MetaSVI(model, guide, meta_optimizer=torch.optim.SGD(model.W.parameters(), lr=lam),
                  tasks_per_step=3, temperature=tau, seed=seed, arch_update="reptile")
    metrics = svi.step(tasks)
    W1 = _W(model)
    for n in W0:
        assert not torch.equal(W1[n], W0[n]), n
        torch.testing.assert_close(W1[n], expected[n], rtol=1e-6, atol=1e-7)
    assert metrics["step"] == 0 and metrics["n_good"] == 3 and metrics["temperature"] == tau
    assert math.isfinite(metrics["loss"]) and svi.step_count == 1 and len(svi.losses) == 1
    assert all(math.isfinite(r["query_loss"]) for r in metrics["tasks"])
    assert 0 < metrics["arch_entropy"] <= math.log(8) + 1e-6


def test_default_optimizer_is_sgd_with_meta_lr_and_decays():
    lam, seed, tau = 0.5, 1, 1.0
    model, guide = _setup()
    tasks = [_easy_task(4), _easy_task(5)]
    W0 = _W(model)
    svi = MetaSVI(model, guide, meta_lr=lam, meta_lr_final=0.1, total_steps=4,
                  tasks_per_step=2, temperature=tau, seed=seed, arch_update="reptile")
    assert [svi.lr_at(s) for s in (0, 2, 4, 9)] == pytest.approx([0.5, 0.275, 0.05, 0.05])
    adapted = _adapted_by_hand(guide, tasks, seed=seed, step=0, tau=tau)
    svi.step(tasks)
    for n in W0:
        expected = W0[n] + lam * torch.stack([a[n] - W0[n] for a in adapted]).mean(0)
        torch.testing.assert_close(_W(model)[n], expected, rtol=1e-6, atol=1e-7)
    # step 1 uses lambda_1 = lr_at(1)
    W1 = _W(model)
    adapted = _adapted_by_hand(guide, tasks, seed=seed, step=1, tau=tau)
    svi.step(tasks)
    lam1 = svi.lr_at(1)
    assert lam1 == pytest.approx(0.5 * (1 - 0.9 / 4))
    for n in W1:
        expected = W1[n] + lam1 * torch.stack([a[n] - W1[n] for a in adapted]).mean(0)
        torch.testing.assert_close(_W(model)[n], expected, rtol=1e-6, atol=1e-7)


def test_arch_decay_is_the_map_step_of_a_gaussian_hyperprior_on_the_logits():
    """alpha <- alpha + lambda (mean_c phi_c - alpha - kappa alpha); mu and sigma as before."""
    lam, kappa, seed, tau = 0.5, 0.2, 3, 1.0
    model, guide = _setup()
    tasks = [_easy_task(6), _easy_task(7)]
    W0 = _W(model)
    adapted = _adapted_by_hand(guide, tasks, seed=seed, step=0, tau=tau)
    svi = MetaSVI(model, guide, meta_lr=lam, tasks_per_step=2, temperature=tau, seed=seed,
                  arch_decay=kappa, arch_update="reptile")
    svi.step(tasks)
    for n in W0:
        pull = torch.stack([a[n] - W0[n] for a in adapted]).mean(0)
        decay = kappa * W0[n] if n.startswith("alpha_") else 0.0
        torch.testing.assert_close(_W(model)[n], W0[n] + lam * (pull - decay),
                                   rtol=1e-6, atol=1e-7)
    # without tasks' pull (T = 0) the logits shrink geometrically towards 0
    model, _ = _setup()
    guide0 = OptimizationEmbeddingGuide(model, inner_steps=0)
    a0 = model.W.alpha("normal").detach().clone()
    svi = MetaSVI(model, guide0, meta_lr=lam, meta_lr_final=1.0, tasks_per_step=1,
                  temperature=tau, arch_decay=kappa, arch_update="reptile")
    for _ in range(3):
        svi.step([_easy_task(8)])
    torch.testing.assert_close(model.W.alpha("normal").detach(), a0 * (1 - lam * kappa) ** 3)
    with pytest.raises(ValueError, match="arch_decay.*-0.1"):
        MetaSVI(model, guide0, arch_decay=-0.1)


def test_weight_scale_scales_the_weights_step_only_and_follows_the_decay():
    """mu, log sigma <- . + s lambda_t mean_c(adapted_c - .); the logits keep lambda_t."""
    lam, s, seed, tau = 0.5, 0.25, 2, 1.0
    model, guide = _setup()
    tasks = [_easy_task(9), _easy_task(10)]
    svi = MetaSVI(model, guide, meta_lr=lam, meta_lr_final=0.1, total_steps=4, tasks_per_step=2,
                  temperature=tau, seed=seed, arch_update="reptile", weight_scale=s)
    for step in range(2):
        W0 = _W(model)
        adapted = _adapted_by_hand(guide, tasks, seed=seed, step=step, tau=tau)
        svi.step(tasks)
        lam_t = svi.lr_at(step)
        for n in W0:
            rate = lam_t if n.startswith("alpha_") else s * lam_t
            expected = W0[n] + rate * torch.stack([a[n] - W0[n] for a in adapted]).mean(0)
            torch.testing.assert_close(_W(model)[n], expected, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="weight_scale.*0"):
        MetaSVI(model, guide, weight_scale=0.0)


def test_query_weight_update_is_the_query_gradient_at_the_adapted_posterior():
    """mu, log sigma <- . - s lambda mean_c grad L_query(psi_c^T); the logits as Algorithm 1."""
    lam, s, seed, tau = 0.5, 2.0, 4, 1.0
    model, guide = _setup()
    tasks = [_easy_task(11), _easy_task(12)]
    W0 = _W(model)
    grads, adapted = [], []
    for c, task in enumerate(tasks):  # by hand: adapt, then the query gradient at psi_c^T
        torch.manual_seed(task_seed(seed, 0, c))
        post, _ = guide.adapt(*task.support, n_classes=task.n_classes, temperature=tau,
                              order="none")
        adapted.append(post.params)
        params = {n: p.detach().requires_grad_(n in ("mu", "log_sigma"))
                  for n, p in post.params.items()}
        xq, yq = task.query
        loss = guide.loss(guide.posterior(params), xq, yq, size=xq.shape[0],
                          n_classes=task.n_classes, temperature=tau)
        g_mu, g_ls = torch.autograd.grad(loss, [params["mu"], params["log_sigma"]])
        grads.append({"mu": g_mu, "log_sigma": g_ls})
    svi = MetaSVI(model, guide, meta_lr=lam, tasks_per_step=2, temperature=tau, seed=seed,
                  arch_update="reptile", weight_update="query", weight_scale=s)
    metrics = svi.step(tasks)
    for n in W0:
        if n in ("mu", "log_sigma"):
            expected = W0[n] - s * lam * torch.stack([g[n] for g in grads]).mean(0)
        else:
            expected = W0[n] + lam * torch.stack([a[n] - W0[n] for a in adapted]).mean(0)
        assert not torch.equal(_W(model)[n], W0[n]), n
        torch.testing.assert_close(_W(model)[n], expected, rtol=1e-5, atol=1e-6)
    assert all(math.isfinite(r["query_loss"]) for r in metrics["tasks"])
    with pytest.raises(ValueError, match="weight_update.*'maml'"):
        MetaSVI(model, guide, weight_update="maml")
    # a delta posterior has no log sigma to differentiate: its step there is zero
    model, _ = _setup()
    delta_guide = OptimizationEmbeddingGuide(model, inner_steps=2, weight_posterior="delta")
    ls0 = model.W.log_sigma.detach().clone()
    MetaSVI(model, delta_guide, meta_lr=lam, tasks_per_step=2, temperature=tau, seed=seed,
            weight_update="query", weight_scale=s).step(tasks)
    assert torch.equal(model.W.log_sigma.detach(), ls0)


def test_mixture_arch_update_is_the_em_step_of_a_categorical_prior():
    """log_softmax(alpha) <- log_softmax(alpha) + lambda (log mean_c softmax(phi_c) -
    log_softmax(alpha)); at lambda = 1 the prior's op probabilities are the tasks' mean
    posterior probabilities. mu and sigma take Reptile's step as before."""
    seed, tau = 3, 1.0
    tasks = [_easy_task(6), _easy_task(7), _easy_task(8)]
    for lam in (1.0, 0.4):
        model, guide = _setup()
        W0 = _W(model)
        adapted = _adapted_by_hand(guide, tasks, seed=seed, step=0, tau=tau)
        svi = MetaSVI(model, guide, meta_lr=lam, tasks_per_step=3, temperature=tau,
                      seed=seed, arch_update="mixture")
        svi.step(tasks)
        for n in W0:
            if n.startswith("alpha_"):
                target = torch.stack([a[n].softmax(-1) for a in adapted]).mean(0).log()
                old = W0[n].log_softmax(-1)
                expected = W0[n] + lam * (target - old)
                if lam == 1.0:  # the mixture itself, up to the logits' free shift
                    torch.testing.assert_close(_W(model)[n].softmax(-1), target.exp(),
                                               rtol=1e-5, atol=1e-6)
            else:
                expected = W0[n] + lam * torch.stack([a[n] - W0[n] for a in adapted]).mean(0)
            torch.testing.assert_close(_W(model)[n], expected, rtol=1e-5, atol=1e-6)


def test_mixture_arch_update_contracts_noise_that_reptile_accumulates():
    """Posteriors that are the prior plus zero-mean logit noise: Reptile's logit mean is a
    random walk whose entropy keeps falling, the mixture step's noise is bounded (it stays
    near uniform; at 60 steps 1.66 nats against 1.07, uniform 2.08).
    Identical posteriors give the same prior either way."""
    from pyro_base.inference.vi.task_updates import mixture_delta, probability_change

    def entropy(a):
        return float(-(a.softmax(-1) * a.log_softmax(-1)).sum(-1).mean())

    g = torch.Generator().manual_seed(0)
    reptile, mixture, lam, n = torch.zeros(6, 8), torch.zeros(6, 8), 0.5, 4
    for _ in range(60):
        noise = 1.5 * torch.randn(n, 6, 8, generator=g)
        reptile = reptile + lam * noise.mean(0)
        changes = probability_change(noise, mixture).sum(0)
        mixture = mixture - lam * mixture_delta(changes, n) / n
    uniform = math.log(8)
    assert entropy(mixture) > uniform - 0.6, entropy(mixture)
    assert entropy(reptile) < entropy(mixture) - 0.4, (entropy(reptile), entropy(mixture))
    phi = torch.tensor([[4.0, 0.0, 0.0]])
    same = torch.zeros(1, 3) - mixture_delta(2 * probability_change(phi), 2) / 2
    torch.testing.assert_close(same.softmax(-1), phi.softmax(-1))


def test_probability_change_keeps_the_precision_of_small_logit_changes():
    """softmax(alpha + d) / softmax(alpha) - 1 in float32 from d ~ 1e-4 matches float64 to
    the precision of d, where the difference of the softmaxes loses three digits."""
    from pyro_base.inference.vi.task_updates import probability_change

    g = torch.Generator().manual_seed(0)
    alpha = torch.randn(5, 8, generator=g, dtype=torch.float64)
    d = 1e-4 * torch.randn(5, 8, generator=g, dtype=torch.float64)
    exact = (alpha + d).softmax(-1) / alpha.softmax(-1) - 1
    ours = probability_change(d.float(), alpha.float()).double()
    naive = ((alpha + d).float().softmax(-1) / alpha.float().softmax(-1) - 1).double()
    assert float((ours - exact).abs().max()) < 1e-3 * float(exact.abs().max())
    assert float((naive - exact).abs().max()) > 10 * float((ours - exact).abs().max())


def test_arch_update_is_checked_and_maml_takes_the_query_gradient():
    model, guide = _setup()
    with pytest.raises(ValueError, match="arch_update"):
        MetaSVI(model, guide, arch_update="mean")
    assert MetaSVI(model, guide, mode="maml", arch_update="mixture").arch_update == "reptile"


def test_user_meta_optimizer_lr_is_honoured_by_the_decay():
    """A user optimizer's own lr is the start of the decay (not replaced by meta_lr)."""
    model, guide = _setup()
    svi = MetaSVI(model, guide, meta_optimizer=torch.optim.SGD(model.W.parameters(), lr=0.2),
                  meta_lr_final=0.5, total_steps=2, tasks_per_step=1)
    svi.step([_easy_task(1)])
    assert svi.optimizer.param_groups[0]["lr"] == pytest.approx(0.2)
    svi.step([_easy_task(1)])
    assert svi.optimizer.param_groups[0]["lr"] == pytest.approx(0.2 * (1 - 0.5 / 2))


@pytest.mark.parametrize("inner_grad", ["first", "second"])
def test_maml_runs_and_changes_W(inner_grad):
    model, guide = _setup(inner_steps=2)
    W0 = _W(model)
    svi = MetaSVI(model, guide, meta_optimizer=torch.optim.SGD(model.W.parameters(), lr=0.1),
                  tasks_per_step=2, mode="maml", inner_grad=inner_grad, temperature=0.7)
    metrics = svi.step([_easy_task(1), _easy_task(2)])
    W1 = _W(model)
    assert metrics["n_good"] == 2 and math.isfinite(metrics["loss"])
    assert all(math.isfinite(r["query_loss"]) for r in metrics["tasks"])
    for n in ("mu", "log_sigma", "alpha_normal", "alpha_reduce"):
        assert torch.isfinite(W1[n]).all(), n
        assert not torch.equal(W1[n], W0[n]), n


def test_maml_first_order_gradient_by_hand():
    """maml/first: W.grad = mean_c d(query loss_c)/dW through phi_T = W - stopgrad(steps)."""
    lam, seed, tau = 0.1, 3, 0.7
    model, guide = _setup(inner_steps=2)
    tasks = [_easy_task(1), _easy_task(2)]
    W0 = model.W.named_tensors()
    total = {n: torch.zeros_like(p) for n, p in W0.items()}
    for c, task in enumerate(tasks):
        torch.manual_seed(task_seed(seed, 0, c))
        post, _ = guide.adapt(*task.support, n_classes=3, temperature=tau, order="first")
        xq, yq = task.query
        q = guide.loss(post, xq, yq, size=xq.shape[0], n_classes=3, temperature=tau)
        for n, g in zip(W0, torch.autograd.grad(q, list(W0.values())), strict=True):
            total[n] += g / len(tasks)
    expected = {n: p.detach() - lam * total[n] for n, p in W0.items()}
    svi = MetaSVI(model, guide, meta_optimizer=torch.optim.SGD(model.W.parameters(), lr=lam),
                  tasks_per_step=2, mode="maml", inner_grad="first", temperature=tau, seed=seed)
    svi.step(tasks)
    for n, p in model.W.named_tensors().items():
        torch.testing.assert_close(p.detach(), expected[n], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("arch_update", ["reptile", "mixture"])
def test_nan_policy_skip_drops_the_bad_task(arch_update):
    lam, seed, tau = 0.3, 2, 1.0
    model, guide = _setup()
    good = _easy_task(1)
    W0 = _W(model)
    (adapted,) = _adapted_by_hand(guide, [good], seed=seed, step=0, tau=tau)
    svi = MetaSVI(model, guide, meta_optimizer=torch.optim.SGD(model.W.parameters(), lr=lam),
                  tasks_per_step=2, nan_policy="skip", temperature=tau, seed=seed,
                  arch_update=arch_update)
    with pytest.warns(RuntimeWarning, match="non-finite loss at meta-step 0 on task 'nan'"):
        metrics = svi.step([good, _nan_task()])
    assert svi.n_skipped == 1 and metrics["n_skipped_total"] == 1
    assert metrics["n_good"] == 1 and math.isfinite(metrics["loss"])
    assert [r["ok"] for r in metrics["tasks"]] == [True, False]
    for n in W0:  # the mean runs over the good task only
        pull = adapted[n] - W0[n]
        if arch_update == "mixture" and n.startswith("alpha_"):
            pull = adapted[n].log_softmax(-1) - W0[n].log_softmax(-1)
        torch.testing.assert_close(_W(model)[n], W0[n] + lam * pull, rtol=1e-5, atol=1e-6)
        assert torch.isfinite(_W(model)[n]).all()


def test_nan_policy_skip_stops_after_consecutive_all_bad_steps():
    model, guide = _setup()
    W0 = _W(model)
    svi = MetaSVI(model, guide, tasks_per_step=1, nan_policy="skip", max_bad_steps=2)
    with pytest.warns(RuntimeWarning):
        metrics = svi.step([_nan_task()])
    assert metrics["n_good"] == 0 and math.isnan(metrics["loss"])
    assert all(torch.equal(_W(model)[n], W0[n]) for n in W0)  # W untouched
    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteLossError,
                                                     match="2 consecutive.*step 1"):
        svi.step([_nan_task()])


@pytest.mark.parametrize("mode", ["reptile", "maml"])
def test_nan_policy_stop_names_step_and_task(mode):
    model, guide = _setup()
    W0 = _W(model)
    svi = MetaSVI(model, guide, tasks_per_step=2, nan_policy="stop", mode=mode)
    svi.step([_easy_task(1), _easy_task(2)])
    W1 = _W(model)
    assert any(not torch.equal(W1[n], W0[n]) for n in W0)
    with pytest.raises(NonFiniteLossError, match=r"meta-step 1 on task 'nan'"):
        svi.step([_easy_task(1), _nan_task()])
    assert all(torch.equal(_W(model)[n], W1[n]) for n in W1)  # last good W kept


def test_run_is_deterministic_and_resumes_exactly():
    def fresh():
        model, guide = _setup(seed=11)
        return model, MetaSVI(model, guide, tasks_per_step=2, meta_lr=0.5, total_steps=3,
                              seed=4, temperature=0.8)

    model_a, svi_a = fresh()
    result = svi_a.run(EasyTasks(), num_steps=3, progress=False)
    assert len(result.losses) == 3 and len(result.metrics) == 3
    assert all(math.isfinite(v) for v in result.losses)
    assert result.state["step"] == 3
    # tasks are a pure function of (seed, step, c)
    t1 = svi_a.sample_tasks(EasyTasks(), 1)
    t2 = svi_a.sample_tasks(EasyTasks(), 1)
    assert [t.name for t in t1] == [t.name for t in t2]
    assert torch.equal(t1[0].support[0], EasyTasks().sample(
        "train", np.random.default_rng([4, 1, 0])).support[0])
    # interrupted after 1 step, resumed from its state: the same W as the straight run
    model_b, svi_b = fresh()
    svi_b.run(EasyTasks(), num_steps=1, progress=False)
    state = svi_b.state_dict()
    model_c, svi_c = fresh()
    svi_c.load_state_dict(state)
    resumed = svi_c.run(EasyTasks(), num_steps=2, progress=False)  # 2 more: step 3
    for n, p in result.params.items():
        torch.testing.assert_close(resumed.params[n], p, rtol=0, atol=0)
    assert resumed.losses == pytest.approx(result.losses)


def test_run_takes_num_steps_more_steps():
    """Two calls of run(1) are two meta-steps, the same W as one run(2)."""
    model_a, guide_a = _setup(seed=11)
    svi_a = MetaSVI(model_a, guide_a, tasks_per_step=2, meta_lr=0.5, total_steps=2, seed=4)
    svi_a.run(EasyTasks(), num_steps=1, progress=False)
    again = svi_a.run(EasyTasks(), num_steps=1, progress=False)
    assert svi_a.step_count == 2 and len(again.metrics) == 1
    model_b, guide_b = _setup(seed=11)
    svi_b = MetaSVI(model_b, guide_b, tasks_per_step=2, meta_lr=0.5, total_steps=2, seed=4)
    straight = svi_b.run(EasyTasks(), num_steps=2, progress=False)
    for n, p in straight.params.items():
        torch.testing.assert_close(again.params[n], p, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(mode="fomaml"), "'fomaml'"),
    (dict(inner_grad="none"), "'none'"),
    (dict(inner_grad="third"), "'third'"),
    (dict(tasks_per_step=0), "tasks_per_step.*0"),
    (dict(meta_lr=0.0), "meta_lr.*0.0"),
    (dict(meta_lr=-1.0), "meta_lr.*-1.0"),
    (dict(meta_lr=float("nan")), "meta_lr.*nan"),
    (dict(meta_lr_final=1.5), "meta_lr_final.*1.5"),
    (dict(nan_policy="ignore"), "'ignore'"),
    (dict(max_bad_steps=0), "max_bad_steps.*0"),
])
def test_bad_arguments(kwargs, match):
    model, guide = _setup()
    with pytest.raises(ValueError, match=match):
        MetaSVI(model, guide, **kwargs)


def test_bad_calls():
    model, guide = _setup()
    svi = MetaSVI(model, guide)
    with pytest.raises(ValueError, match="at least one task"):
        svi.step([])
    with pytest.raises(ValueError, match="num_steps.*-1"):
        svi.run(EasyTasks(), num_steps=-1, progress=False)


def test_head_not_meta_learned_stays_at_zero_and_features_move():
    from pyro_base.inference.vi.meta_svi import head_slices, zero_head

    model = BASEModel(SuperNet(SearchSpace.preset("tiny")), beta=0.01)
    zero_head(model)
    (head,) = [s for s in head_slices(model) if s.stop - s.start > 5]  # classifier.weight
    assert model.W.mu[head].abs().sum() == 0
    mu0 = model.W.mu.detach().clone()
    guide = OptimizationEmbeddingGuide(model, inner_steps=2, inner_lr=0.05)
    svi = MetaSVI(model, guide, tasks_per_step=2, meta_head=False, log_query=False)
    svi.step([_easy_task(1), _easy_task(2)])
    mu = model.W.mu.detach()
    for s in head_slices(model):
        assert torch.equal(mu[s], mu0[s])           # the head did not move ...
    assert not torch.equal(mu, mu0)                 # ... the features did
    # the same step with a meta-learned head moves the head too
    model2 = BASEModel(SuperNet(SearchSpace.preset("tiny")), beta=0.01)
    model2.W.load_state_dict({k: v.clone() for k, v in
                              {**model.W.state_dict(), "mu": mu0}.items()})
    svi2 = MetaSVI(model2, OptimizationEmbeddingGuide(model2, inner_steps=2, inner_lr=0.05),
                   tasks_per_step=2, log_query=False)
    svi2.step([_easy_task(1), _easy_task(2)])
    assert not torch.equal(model2.W.mu.detach()[head], mu0[head])
