"""The BASE generative model as a Pyro model over a DARTS-style supernet.

For one task with ``N`` labelled images::

    theta ~ p(theta; W)                       one flat site, event shape [P]
    z_c   ~ Relaxed(tau, p(z_c; W))           one site per cell type, event shape [E, K]
    y_n   ~ Categorical(logits = f(x_n; theta, z)[:n_classes])     n in plate("data", N)

The likelihood is tempered, ``p(y|x)^(1/beta)`` via ``poutine.scale`` on the data plate, so
``-ELBO = (1/beta) sum_n E_q[-log p(y_n)] + KL(q || p)`` is the usual KL-weighted objective
with KL weight ``beta`` (and model and guide site scales always agree). A subsampled batch is
scaled to the task size by the plate.

Usage::

    model = BASEModel(SuperNet(space), weight_prior=LearnedGaussianPrior(),
                      arch_prior=LearnedCategoricalPrior(), relaxation=Concrete(), beta=0.01)
    model(x, y, size=N, n_classes=5, temperature=0.5)

The model knows no training loop: guides and :class:`~pyro_base.inference.vi.meta_svi.MetaSVI`
drive it.
``W`` lives in ``model.W`` (a plain ``nn.Module``). It is *held* (not in Pyro's param store)
unless ``learn_prior_in_svi=True``, in which case ``pyro.module`` registers it and plain
``pyro.infer.SVI`` with an autoguide fits it too (empirical Bayes).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule

from pyro_base import defaults
from pyro_base.models.priors import (
    ArchPrior,
    LearnedCategoricalPrior,
    LearnedGaussianPrior,
    MetaParams,
    WeightPrior,
)
from pyro_base.models.relaxations import Concrete, Relaxation, check_temperature
from pyro_base.supernet import ParamSpec, SuperNet, functional_forward


class BASEModel(PyroModule):
    """``model(x, y=None, *, size=None, n_classes=None, temperature=1.0)``."""

    def __init__(self, supernet: SuperNet, *, weight_prior: WeightPrior | None = None,
                 arch_prior: ArchPrior | None = None, relaxation: Relaxation | None = None,
                 beta: float = defaults.BETA, init_scale: float = defaults.INIT_SCALE,
                 W: MetaParams | None = None,
                 learn_prior_in_svi: bool = False) -> None:
        super().__init__()
        if not (math.isfinite(beta) and beta > 0):
            raise ValueError(f"beta (KL weight) must be > 0, got {beta!r}")
        self.supernet = supernet
        self.space = supernet.space
        self.spec = ParamSpec.from_module(supernet)
        self.W = W if W is not None else MetaParams.from_supernet(supernet,
                                                                  init_scale=init_scale)
        self.W.check_space(self.space, self.spec.size)
        self.weight_prior = weight_prior or LearnedGaussianPrior()
        self.arch_prior = arch_prior or LearnedCategoricalPrior()
        self.relaxation = relaxation or Concrete()
        self.beta = float(beta)
        self.learn_prior_in_svi = learn_prior_in_svi

    @property
    def meta_params(self) -> MetaParams:
        """``W`` by plain lookup: on a PyroModule, ``self.W`` would call ``pyro.module`` and so
        let SVI fit ``W`` even when it is meant to be held."""
        return self._modules["W"]  # type: ignore[return-value]

    @property
    def network(self) -> SuperNet:
        """The supernet template by plain lookup: ``self.supernet`` would register its
        template weights (never used; theta replaces them) in Pyro's param store."""
        return self._modules["supernet"]  # type: ignore[return-value]

    @property
    def site_names(self) -> tuple[str, ...]:
        return ("theta", *(f"z_{c}" for c in self.space.cell_types))

    def net_logits(self, x: torch.Tensor, theta: torch.Tensor,
                   z: dict[str, torch.Tensor], n_classes: int | None = None) -> torch.Tensor:
        """``f(x; theta, z)`` restricted to the task's first ``n_classes`` outputs."""
        logits = functional_forward(self.network, self.spec, theta, x, z)
        return logits if n_classes is None else logits[..., :n_classes]

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, *, size: int | None = None,
                n_classes: int | None = None, temperature: float = 1.0) -> torch.Tensor:
        check_temperature(temperature)
        if n_classes is not None and not 2 <= n_classes <= self.space.n_classes:
            raise ValueError(f"n_classes must be in [2, {self.space.n_classes}] for this search "
                             f"space, got {n_classes}")
        W = self.meta_params
        if self.learn_prior_in_svi:
            pyro.module("W", W)
        theta = pyro.sample("theta", self.weight_prior.dist(W))
        z = {}
        for cell in self.space.cell_types:
            logits = self.arch_prior.logits(W, cell)
            value = pyro.sample(f"z_{cell}", self.relaxation.dist(logits, temperature))
            z[cell] = self.relaxation.weights(value)
        logits = self.net_logits(x, theta, z, n_classes)
        batch = x.shape[0]
        size = batch if size is None else size
        if size < batch:
            raise ValueError(f"size (task size {size}) must be >= the batch size {batch}")
        idx = torch.arange(batch, device=x.device)
        with pyro.plate("data", size, subsample=idx), poutine.scale(scale=1.0 / self.beta):
            # No validation of the logits: NaN logits (bad data, a diverged inner loop) must
            # give a NaN loss for the caller's nan_policy, not a ValueError mid-trace. Labels
            # are validated by Task.
            pyro.sample("y", dist.Categorical(logits=logits, validate_args=False), obs=y)
        return logits
