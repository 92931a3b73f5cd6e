"""Per-step diagnostics of the meta-update: cosine/ratio on hand-made vectors, every group
logged by a Reptile step (sequential, batched, MAML) without changing W, and JSON metrics."""

import json
import math

import pyro
import pytest
import torch

from pyro_base.inference.run import job
from pyro_base.inference.run.config import MetaConfig
from pyro_base.inference.run.runlog import RunDir
from pyro_base.inference.vi.diagnostics import agreement, parameter_groups, step_agreement
from pyro_base.inference.vi.guides import OptimizationEmbeddingGuide
from pyro_base.inference.vi.meta_svi import MetaSVI, task_seed
from pyro_base.models.base_model import BASEModel
from pyro_base.search_space import SearchSpace
from pyro_base.supernet import SuperNet
from pyro_base.tasks.base import Task

GROUPS = {"mu_features", "mu_head", "log_sigma", "alpha_normal", "alpha_reduce"}


def _task(seed, n=8, n_classes=3, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)

    def split():
        y = torch.arange(n) % n_classes
        x = 0.5 * torch.randn(n, 3, 8, 8, generator=g, dtype=dtype)
        x[torch.arange(n), y] += 1.0
        return x, y

    return Task(name=f"t{seed}", n_classes=n_classes, support=split(), query=split())


def _model(double=False):
    torch.manual_seed(0)
    pyro.clear_param_store()
    net = SuperNet(SearchSpace.preset("tiny"), **({"skip_zero": False} if double else {}))
    model = BASEModel(net, beta=0.01)
    model = model.double() if double else model
    with torch.no_grad():
        model.W.alpha("normal").normal_(0.0, 0.5)
    return model


def _W(model):
    return {n: p.detach().clone() for n, p in model.W.named_tensors().items()}


def _check_ranges(agree):
    assert set(agree) == GROUPS
    for g, v in agree.items():
        assert -1 - 1e-9 <= v["cos"] <= 1 + 1e-9, g
        assert 0 <= v["ratio"] <= 1 + 1e-9, g
        assert v["noise_ratio"] == pytest.approx(1 / math.sqrt(3))


# -- the statistic ---------------------------------------------------------------------------------
def test_agreement_on_hand_made_vectors():
    d = torch.tensor([0.3, -1.0, 2.0, 0.5])
    same = agreement(torch.stack([d, d, d]))
    assert same["cos"] == pytest.approx(1) and same["ratio"] == pytest.approx(1)
    opposite = agreement(torch.stack([d, -d]))
    assert opposite["cos"] == pytest.approx(-1) and opposite["ratio"] == pytest.approx(0)
    for c in (2, 3, 5):
        ortho = agreement(torch.eye(c, 7))  # C orthogonal unit vectors
        assert ortho["cos"] == pytest.approx(0)
        assert ortho["ratio"] == pytest.approx(1 / math.sqrt(c))
        assert ortho["noise_ratio"] == pytest.approx(1 / math.sqrt(c))
    # scale-free: the same direction at different lengths still agrees fully
    assert agreement(torch.stack([d, 3 * d]))["cos"] == pytest.approx(1)
    with pytest.raises(ValueError, match="at least 2"):
        agreement(d[None])


def test_groups_split_mu_at_the_classifier():
    model = _model()
    groups = parameter_groups(model.spec, model.W.cells)
    assert set(groups) == GROUPS
    head = [s for n, s in model.spec.layer_slices().items() if n.startswith("classifier.")]
    covered = sorted((s.start, s.stop) for s in groups["mu_features"][1] + groups["mu_head"][1])
    assert covered[0][0] == 0 and covered[-1][1] == model.spec.size
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:], strict=False))
    assert groups["mu_head"][1] == sorted(head, key=lambda s: s.start)
    # by hand: a head-only difference shows in mu_head, not in mu_features
    base = torch.randn(model.spec.size)
    bumped = base.clone()
    bumped[head[0]] += 1.0
    out = step_agreement([{"mu": base, "log_sigma": base, "alpha_normal": base[:4],
                           "alpha_reduce": base[:4]},
                          {"mu": bumped, "log_sigma": base, "alpha_normal": base[:4],
                           "alpha_reduce": base[:4]}], groups)
    assert out["mu_features"]["cos"] == pytest.approx(1) and out["mu_head"]["cos"] < 1
    assert step_agreement([{"mu": base}], groups) is None


# -- in MetaSVI ----------------------------------------------------------------------------------
def test_reptile_step_logs_agreement_and_keeps_W():
    """W after the step is the hand-made Algorithm 1 step's, bit for bit, and the logged
    agreement is the one computed by hand from the same deltas."""
    lam, seed, tau = 0.3, 5, 0.7
    model = _model()
    guide = OptimizationEmbeddingGuide(model, inner_steps=2)
    tasks = [_task(1), _task(2), _task(3)]
    W0 = model.W.named_tensors()
    deltas = []
    for c, task in enumerate(tasks):  # the step by hand
        torch.manual_seed(task_seed(seed, 0, c))
        post, _ = guide.adapt(*task.support, n_classes=3, temperature=tau, order="none")
        deltas.append({n: p.detach() - post.params[n] for n, p in W0.items()})
    acc = {n: torch.zeros_like(p) for n, p in W0.items()}
    for d in deltas:
        for n in acc:
            acc[n].add_(d[n])
    copy = {n: torch.nn.Parameter(p.detach().clone()) for n, p in W0.items()}
    for n, p in copy.items():
        p.grad = acc[n] * (1.0 / 3)
    torch.optim.SGD(list(copy.values()), lr=lam).step()
    by_hand = step_agreement(deltas, parameter_groups(model.spec, model.W.cells))

    svi = MetaSVI(model, guide, meta_optimizer=torch.optim.SGD(model.W.parameters(), lr=lam),
                  tasks_per_step=3, temperature=tau, seed=seed, arch_update="reptile")
    metrics = svi.step(tasks)
    for n, p in model.W.named_tensors().items():
        assert torch.equal(p.detach(), copy[n].detach()), n
    _check_ranges(metrics["agreement"])
    for g, v in by_hand.items():
        assert metrics["agreement"][g] == pytest.approx(v, rel=1e-9, abs=1e-12), g
    assert svi._deltas == []  # nothing kept across steps


def test_batched_and_maml_steps_log_agreement():
    model = _model(double=True)
    guide = OptimizationEmbeddingGuide(model, inner_steps=2, elbo_impl="functional")
    tasks = [_task(s, dtype=torch.float64) for s in (1, 2, 3)]
    svi = MetaSVI(model, guide, batch_tasks=True, tasks_per_step=3, temperature=0.7)
    _check_ranges(svi.step(tasks)["agreement"])

    model = _model()
    guide = OptimizationEmbeddingGuide(model, inner_steps=2)
    svi = MetaSVI(model, guide, mode="maml", tasks_per_step=3, temperature=0.7)
    _check_ranges(svi.step([_task(s) for s in (1, 2, 3)])["agreement"])


def test_one_good_task_has_no_agreement():
    model = _model()
    svi = MetaSVI(model, OptimizationEmbeddingGuide(model, inner_steps=1), tasks_per_step=1)
    assert svi.step([_task(1)])["agreement"] is None


def test_metrics_are_json_and_reach_metrics_jsonl(tmp_path):
    model = _model()
    svi = MetaSVI(model, OptimizationEmbeddingGuide(model, inner_steps=1), tasks_per_step=3,
                  temperature=0.7)
    run = RunDir(tmp_path)
    cfg = MetaConfig(preset="tiny", steps=100, checkpoint_every=50)
    on_step = job.checkpoint_callback(run, cfg, model.space, rank=0, world=1)
    metrics = svi.step([_task(s) for s in (1, 2, 3)])
    on_step(svi, metrics)
    json.dumps(metrics, allow_nan=False)  # plain finite floats, no tensors
    (line,) = (tmp_path / "metrics.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert set(record["agreement"]) == GROUPS
    assert record["agreement"] == metrics["agreement"]
    cells = record["arch_entropy_per_cell"]
    assert set(cells) == {"normal", "reduce"}
    assert record["arch_entropy"] == pytest.approx(sum(cells.values()) / 2)
    assert cells["reduce"] == pytest.approx(math.log(8))  # uniform alpha: log K per edge
    assert cells["normal"] < math.log(8)
    sigma = record["sigma"]
    assert set(sigma) == {"mean", "std", "min", "max"}
    assert sigma["min"] <= sigma["mean"] <= sigma["max"] and sigma["std"] >= 0
    assert sigma["mean"] == pytest.approx(0.03)  # W's initial scale, before the step
