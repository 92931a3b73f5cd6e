"""GPU checks (run only where a CUDA device exists): meta-training stays on the device, moves W,
and is reproducible for a fixed seed. CUDA draws its own random numbers, so W is not compared
with a CPU run."""

import pytest
import torch

from inference.factory import build_guide, build_meta_svi, build_model, build_space, build_tasks
from pyro_base.config import MetaConfig

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
