"""GPU checks (run only where a CUDA device exists): meta-training stays on the device, moves W,
and is reproducible for a fixed seed. CUDA draws its own random numbers, so W is not compared
with a CPU run."""

import pytest
import torch

from pyro_base.inference.run.config import MetaConfig
from pyro_base.inference.run.factory import (
    build_guide,
    build_meta_svi,
    build_model,
    build_space,
    build_tasks,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA device; CI and the development machines have none"),
]


def _two_steps(device: str) -> dict[str, torch.Tensor]:
    cfg = MetaConfig(preset="tiny", steps=2, tasks_per_step=2, inner_steps=2, n_support=20,
                     n_query=20, inner_batch=10, inner_optimizer="sgd", seed=3)
    space = build_space(cfg)
    model = build_model(cfg, space, device=device)
    svi = build_meta_svi(cfg, model, build_guide(cfg, model))
    svi.run(build_tasks(cfg, space), cfg.steps, progress=False)
    return {n: p.detach().cpu() for n, p in model.W.named_tensors().items()}


def test_meta_training_on_cuda_is_finite_moves_w_and_is_reproducible():
    torch.manual_seed(3)
    start = build_model(MetaConfig(preset="tiny", seed=3), build_space(MetaConfig(preset="tiny")))
    w0 = {n: p.detach() for n, p in start.W.named_tensors().items()}
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        first, second = _two_steps("cuda"), _two_steps("cuda")
    finally:
        torch.use_deterministic_algorithms(False)
    for name, value in first.items():
        assert torch.isfinite(value).all(), name
        assert torch.equal(value, second[name]), name
    assert not torch.allclose(first["mu"], w0["mu"])


def _graph_model():
    from pyro_base.models.base_model import BASEModel
    from pyro_base.search_space import SearchSpace
    from pyro_base.supernet import SuperNet

    torch.manual_seed(0)
    model = BASEModel(SuperNet(SearchSpace.preset("tiny"), skip_zero=False), beta=0.01)
    return model.to(torch.device("cuda"))


def test_cuda_graph_inner_loop_equals_eager_functional_loop():
    """The captured inner step replays the eager step: same losses and posterior (float32)."""
    from pyro_base.inference.vi.guides import OptimizationEmbeddingGuide

    model = _graph_model()
    x = torch.randn(16, 3, 12, 12, device="cuda")
    y = torch.randint(0, 5, (16,), device="cuda")
    results = {}
    for impl in ("functional", "graph"):
        guide = OptimizationEmbeddingGuide(model, inner_steps=6, batch_size=8, elbo_impl=impl)
        runs = []
        for _ in range(2):  # the second graph run replays the cached graph
            torch.manual_seed(7)
            post, losses = guide.adapt(x, y, n_classes=5, temperature=0.5)
            runs.append((post.params, losses))
        results[impl] = runs
    loop = next(iter(guide._static_loops.values()))
    assert loop._graph is not None
    (p_eager, l_eager), _ = results["functional"]
    for p_graph, l_graph in results["graph"]:
        assert l_graph == pytest.approx(l_eager, rel=1e-4, abs=1e-5)
        for name, value in p_eager.items():
            torch.testing.assert_close(p_graph[name], value, rtol=1e-4, atol=1e-5)


def test_batched_cuda_graph_meta_step_moves_w_and_is_finite():
    from pyro_base.inference.vi.guides import OptimizationEmbeddingGuide
    from pyro_base.inference.vi.meta_svi import MetaSVI
    from pyro_base.tasks.base import Task

    model = _graph_model()
    guide = OptimizationEmbeddingGuide(model, inner_steps=3, elbo_impl="graph")
    svi = MetaSVI(model, guide, tasks_per_step=3, batch_tasks=True, log_query=False)
    tasks = [Task(name=f"t{c}", n_classes=5,
                  support=(torch.randn(12, 3, 12, 12), torch.randint(0, 5, (12,))),
                  query=(torch.randn(12, 3, 12, 12), torch.randint(0, 5, (12,))))
             for c in range(3)]
    mu0 = model.W.mu.detach().clone()
    for _ in range(2):
        metrics = svi.step(tasks)
        assert metrics["n_good"] == 3
    assert next(iter(guide._static_loops.values()))._graph is not None
    assert torch.isfinite(model.W.mu).all()
    assert not torch.allclose(model.W.mu, mu0)


def test_batched_cuda_graph_equals_the_same_loop_run_eagerly():
    """tasks=3 with minibatches and a class count per task: captured == eager, twice."""
    from pyro_base.inference.vi.guides import OptimizationEmbeddingGuide
    from pyro_base.inference.vi.static_loop import StaticInnerLoop

    model = _graph_model()
    guide = OptimizationEmbeddingGuide(model, inner_steps=4, batch_size=6, elbo_impl="graph")
    xs = torch.randn(3, 10, 3, 12, 12, device="cuda")
    ys = torch.stack([torch.randint(0, n, (10,), device="cuda") for n in (3, 5, 4)])
    loops = [StaticInnerLoop(guide, x_shape=(3, 12, 12), size=10, batch=6, tasks=3,
                             capture=capture) for capture in (False, True)]
    W = model.W.named_tensors()
    runs = []
    for loop in loops:
        for _ in range(2):
            torch.manual_seed(11)
            runs.append(loop.run(W, xs, ys, n_classes=[3, 5, 4], temperature=0.5))
    assert loops[1]._graph is not None
    (p_eager, l_eager) = runs[0]
    for p_run, l_run in runs[1:]:
        torch.testing.assert_close(l_run, l_eager, rtol=1e-4, atol=1e-5)
        for name, value in p_eager.items():
            torch.testing.assert_close(p_run[name], value, rtol=1e-4, atol=1e-5)
