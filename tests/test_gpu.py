"""GPU checks: the same meta-step on CUDA as on the CPU (run only where a CUDA device exists)."""

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


def test_meta_training_on_cuda_matches_cpu():
    cpu, cuda = _two_steps("cpu"), _two_steps("cuda")
    for name in cpu:
        assert torch.allclose(cpu[name], cuda[name], atol=1e-4, rtol=1e-3), name
