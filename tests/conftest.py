"""Shared fixtures: a tiny BASE model with two synthetic tasks and their posterior draws."""

import pyro
import pytest
import torch

from pyro_base.tasks.base import Task


def synthetic_task(name, n_classes, seed, *, n_support=12, n_query=10, shift=0.0):
    """Random 8x8 images; with ``shift`` > 0 the class moves every pixel (an easy task)."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        y = torch.randint(0, n_classes, (n,), generator=g)
        x = torch.randn(n, 3, 8, 8, generator=g) * (0.5 if shift else 1.0)
        x = x + shift * (2 * y.float() / (n_classes - 1) - 1)[:, None, None, None]
        return x, y

    return Task(name=name, n_classes=n_classes, support=split(n_support), query=split(n_query),
                metadata={"family": f"toy{n_classes}", "seed": seed})


@pytest.fixture(scope="session")
def tiny_model():
    from pyro_base.models.base_model import BASEModel
    from pyro_base.search_space import SearchSpace
    from pyro_base.supernet import SuperNet

    pyro.set_rng_seed(0)
    return BASEModel(SuperNet(SearchSpace.preset("tiny")), beta=0.01)


@pytest.fixture(scope="session")
def toy_posterior(tiny_model):
    """(model, guide, tasks, draws, idata): 2 tasks + the prior, 2 chains x 20 draws."""
    from pyro_base.inference.posterior.draws import posterior_draws, to_inference_data
    from pyro_base.inference.vi.guides import OptimizationEmbeddingGuide

    tasks = [synthetic_task("a", 3, 0), synthetic_task("b", 4, 1)]
    guide = OptimizationEmbeddingGuide(tiny_model, inner_steps=3)
    draws = posterior_draws(tiny_model, guide, tasks, 20, temperature=0.5, num_chains=2,
                            include_prior=True, seed=0)
    return tiny_model, guide, tasks, draws, to_inference_data(draws)
