"""Adaptation of the meta-learned prior to a new task, and predictive accuracy.

``adapt`` runs the optimization-embedding inner loop on the task's support set, usually longer
than during meta-training, and returns the posterior over ``(theta, z)``, its genotype (BASE
decoding rule) and the query accuracy of the adapted supernet under the posterior predictive
``p(y | x, D) ~= 1/S sum_s softmax f(x; theta_s, z_s)``. ``steps=0`` is the poster's
"multi-task prior": the genotype of ``alpha`` itself, no adaptation.

Usage::

    result = adapt(model, guide, task, steps=50, temperature=0.3)
    result.genotype, result.query_accuracy, result.posterior.op_probs()
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from pyro import poutine

from pyro_base import defaults
from pyro_base.inference.vi.guides import AdaptedPosterior, OptimizationEmbeddingGuide
from pyro_base.models.base_model import BASEModel
from pyro_base.tasks.base import Task


@dataclass
class Adaptation:
    """The outcome of adapting to one task."""

    task: str
    family: str
    posterior: AdaptedPosterior
    genotype: object
    query_accuracy: float
    query_loss: float
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)


@torch.no_grad()
def predictive_probs(model: BASEModel, posterior: AdaptedPosterior, x: torch.Tensor, *,
                     n_classes: int, temperature: float, num_samples: int = 8) -> torch.Tensor:
    """Posterior predictive class probabilities ``[B, n_classes]``,
    ``1/S sum_s softmax f(x; theta_s, z_s)`` with ``(theta_s, z_s) ~ q``.

    Each draw traces the guide and replays the model on its values (``poutine.trace`` and
    ``poutine.replay``), as Pyro's ``Predictive(model, guide=posterior, num_samples=S,
    return_sites=["_RETURN"])`` does per sample, but without the two extra runs of the model
    that ``Predictive`` spends finding the plate nesting and the sites' shapes: with ``S = 4``
    those were a third of the cost of the evaluation's predictive. The draws are the same
    distribution; the random stream differs from ``Predictive``'s.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    total = None
    for _ in range(num_samples):
        guide_trace = poutine.trace(posterior).get_trace(x, None, n_classes=n_classes,
                                                         temperature=temperature)
        logits = poutine.replay(model, trace=guide_trace)(x, None, n_classes=n_classes,
                                                           temperature=temperature)
        probs = logits.softmax(-1)
        total = probs if total is None else total + probs
    return total / num_samples


def adapt(model: BASEModel, guide: OptimizationEmbeddingGuide, task: Task, *,
          steps: int | None = defaults.ADAPT_STEPS,
          temperature: float = defaults.ADAPT_TEMPERATURE, num_samples: int = defaults.NUM_SAMPLES,
          rule: str = "base") -> Adaptation:
    """Adapt ``W`` (held in ``model``) to ``task``; ``steps=0`` gives the prior-only result."""
    device = model.W.mu.device
    task = task.to(device)
    (xs, ys), (xq, yq) = task.support, task.query
    start = time.perf_counter()
    steps = guide.inner_steps if steps is None else steps
    if steps == 0:
        post, losses = guide.prior_posterior(), []
    else:
        post, losses = guide.adapt(xs, ys, n_classes=task.n_classes, temperature=temperature,
                                   steps=steps)
    seconds = time.perf_counter() - start
    probs = predictive_probs(model, post, xq, n_classes=task.n_classes,
                             temperature=temperature, num_samples=num_samples)
    accuracy = float((probs.argmax(-1) == yq).float().mean())
    nll = float(-probs.gather(1, yq[:, None]).clamp_min(1e-12).log().mean())
    return Adaptation(task=task.name, family=task.family, posterior=post,
                      genotype=post.genotype(model.space, rule=rule), query_accuracy=accuracy,
                      query_loss=nll, steps=steps, seconds=seconds, losses=losses)
