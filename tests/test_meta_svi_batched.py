"""MetaSVI(batch_tasks=True): the vmapped inner loops of a step give Algorithm 1's update, keep
the NaN policy per task, and group tasks of unequal shape."""

import math

import pyro
import pytest
import torch

from pyro_base.inference.run.config import ConfigError, MetaConfig
from pyro_base.inference.vi.guides import OptimizationEmbeddingGuide
from pyro_base.inference.vi.meta_svi import MetaSVI, task_seed
from pyro_base.models.base_model import BASEModel
from pyro_base.search_space import SearchSpace
from pyro_base.supernet import SuperNet
from pyro_base.tasks.base import Task


def _task(seed, n=8, n_classes=3, name=None, nan=False):
    g = torch.Generator().manual_seed(seed)

    def split():
        y = torch.arange(n) % n_classes
        x = 0.5 * torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64)
        x[torch.arange(n), y] += 1.0
        return x, y

    (xs, ys), query = split(), split()
    if nan:
        xs[0, 0, 0, 0] = float("nan")
    return Task(name=name or f"t{seed}", n_classes=n_classes, support=(xs, ys), query=query)


def _svi(impl="functional", batch_tasks=True, inner_batch=None, **kwargs):
    torch.manual_seed(0)
    pyro.clear_param_store()
    model = BASEModel(SuperNet(SearchSpace.preset("tiny"), skip_zero=False),
                      beta=0.01).double()
    with torch.no_grad():
        model.W.alpha("normal").normal_(0.0, 0.5)
    guide = OptimizationEmbeddingGuide(model, inner_steps=3, batch_size=inner_batch,
                                       elbo_impl=impl)
    return model, MetaSVI(model, guide, batch_tasks=batch_tasks, temperature=0.7, seed=4,
                          **kwargs)


def _W(model):
    return {n: p.detach().clone() for n, p in model.W.named_tensors().items()}


@pytest.mark.parametrize("inner_batch", [None, 5])
@pytest.mark.parametrize("impl", ["functional", "graph"])
def test_one_task_per_step_equals_the_sequential_step(impl, inner_batch):
    """With C = 1 the vmapped loop draws the sequential loop's permutations and noise."""
    out = []
    for batch_tasks in (False, True):
        model, svi = _svi(impl, batch_tasks, inner_batch, tasks_per_step=1)
        metrics = [svi.step([_task(s)]) for s in (1, 2)]
        out.append((_W(model), [m["tasks"][0]["inner_last"] for m in metrics]))
    (w_seq, l_seq), (w_bat, l_bat) = out
    assert l_bat == pytest.approx(l_seq, rel=1e-10)
    for n in w_seq:
        torch.testing.assert_close(w_bat[n], w_seq[n], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("arch_update", ["reptile", "mixture"])
def test_several_tasks_move_W_by_the_mean_adapted_delta(arch_update):
    """Reptile with lambda = 1: W becomes the mean of the C posteriors of the vmapped loop
    (the logits under ``arch_update="mixture"``: the mean of their op probabilities)."""
    model, svi = _svi(tasks_per_step=3, meta_lr=1.0, meta_lr_final=1.0, arch_update=arch_update)
    tasks = [_task(s) for s in (1, 2, 3)]
    w0 = _W(model)
    xs = torch.stack([t.support[0] for t in tasks])
    ys = torch.stack([t.support[1] for t in tasks])
    loop = svi.guide.static_loop(x_shape=(3, 8, 8), size=8, tasks=3,
                                 device=xs.device, dtype=xs.dtype)
    torch.manual_seed(task_seed(4, 0, 0))  # the step seeds a group from its first task
    # before W (the prior) moves
    expected, losses = loop.run(w0, xs, ys, n_classes=3, temperature=0.7)
    metrics = svi.step(tasks)
    assert metrics["n_good"] == 3 and len(svi.guide._static_loops) == 1
    assert [r["task"] for r in metrics["tasks"]] == ["t1", "t2", "t3"]
    assert [r["inner_last"] for r in metrics["tasks"]] == losses[-1].tolist()
    assert all(math.isfinite(r["query_loss"]) for r in metrics["tasks"])
    assert not torch.equal(model.W.mu.detach(), w0["mu"])
    for n in w0:
        got = model.W.named_tensors()[n].detach()
        if arch_update == "mixture" and n.startswith("alpha_"):
            torch.testing.assert_close(got.softmax(-1), expected[n].softmax(-1).mean(0),
                                       rtol=1e-10, atol=1e-12)
        else:
            torch.testing.assert_close(got, expected[n].mean(0), rtol=1e-10, atol=1e-12)


def test_nan_task_is_skipped_and_the_others_still_count():
    model, svi = _svi(tasks_per_step=3, nan_policy="skip")
    with pytest.warns(RuntimeWarning, match="non-finite loss.*'bad'"):
        metrics = svi.step([_task(1), _task(2, name="bad", nan=True), _task(3)])
    assert metrics["n_good"] == 2 and svi.n_skipped == 1
    bad = metrics["tasks"][1]
    assert not bad["ok"] and math.isnan(bad["inner_last"])
    assert torch.isfinite(model.W.mu).all()


def test_tasks_of_unequal_shape_are_grouped():
    model, svi = _svi(tasks_per_step=3)
    tasks = [_task(1, n=8), _task(2, n=6), _task(3, n=8, n_classes=2)]
    metrics = svi.step(tasks)
    assert metrics["n_good"] == 3
    # one vmapped loop per support shape, whatever the class counts: 2 tasks of 8, 1 of 6
    assert sorted((k[1], k[3]) for k in svi.guide._static_loops) == [(6, 1), (8, 2)]
    assert torch.isfinite(model.W.mu).all()


@pytest.mark.parametrize("kwargs,match", [
    (dict(impl="pyro"), "elbo_impl"),
    (dict(mode="maml"), "mode='reptile'"),
])
def test_batch_tasks_needs_reptile_and_a_pyro_free_guide(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _svi(**kwargs)


def test_config_checks_batch_tasks():
    assert MetaConfig(batch_tasks=True, elbo_impl="graph").batch_tasks
    with pytest.raises(ConfigError, match="batch_tasks"):
        MetaConfig(batch_tasks=True)
    with pytest.raises(ConfigError, match="batch_tasks"):
        MetaConfig(batch_tasks=True, elbo_impl="functional", mode="maml")


def test_memory_check_counts_the_tasks_adapted_at_once(monkeypatch):
    from pyro_base.inference.run import job as module

    seen = []
    monkeypatch.setattr(module, "check_fits", lambda est, device: seen.append(est.activations))
    space = SearchSpace.preset("tiny")
    for batch_tasks in (False, True):
        cfg = MetaConfig(preset="tiny", elbo_impl="functional", batch_tasks=batch_tasks,
                         tasks_per_step=4, inner_batch=8)
        module.check_memory(cfg, space, torch.device("cpu"))
    one, four = seen
    assert four == pytest.approx(4 * one, rel=0.05)


class _Tasks:
    """A minimal TaskDistribution: a task is a pure function of the rng state."""

    name = "easy"

    def sample(self, split, rng):
        return _task(int(rng.integers(2**31)))


def test_batched_run_resumes_exactly():
    """Interrupted after one step and resumed from its state: the straight run's W, bit for bit
    (each group's noise is seeded from (seed, step, first task))."""
    def fresh():
        return _svi(tasks_per_step=3, total_steps=3, inner_batch=5)

    _, straight = fresh()
    result = straight.run(_Tasks(), num_steps=3, progress=False)
    assert all(math.isfinite(v) for v in result.losses)
    _, first = fresh()
    first.run(_Tasks(), num_steps=1, progress=False)
    _, resumed = fresh()
    resumed.load_state_dict(first.state_dict())
    again = resumed.run(_Tasks(), num_steps=2, progress=False)  # 2 more: step 3
    for n, p in result.params.items():
        torch.testing.assert_close(again.params[n], p, rtol=0, atol=0)
    assert again.losses == result.losses
