"""The meta-parameters ``W = (mu, log sigma, alpha)`` and swappable priors over theta and z.

``W`` is shared by every task. The *learned* priors read it (BASE: ``theta ~ N(mu, sigma^2)``,
``z_c ~ Cat(softmax alpha_c)``); the *fixed* ones ignore it, in which case ``W`` is only the
starting point of each task's posterior (MAML-like). Either way the optimization-embedding
guide starts every task at ``W`` and meta-training moves ``W``.

Usage::

    W = MetaParams.from_supernet(net, init_scale=0.03)
    weight_prior = LearnedGaussianPrior()          # or FixedGaussianPrior(scale=0.1)
    arch_prior = LearnedCategoricalPrior()         # or UniformCategoricalPrior()
    d_theta = weight_prior.dist(W)                 # Normal(mu, sigma).to_event(1)
    logits = arch_prior.logits(W, "normal")        # [E, K]
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import pyro.distributions as dist
import torch
from torch import nn

from pyro_base import defaults
from pyro_base.search_space import SearchSpace
from pyro_base.supernet import ParamSpec, SuperNet


class MetaParams(nn.Module):
    """``W``: ``mu`` [P], ``log_sigma`` [P] and ``alpha[cell]`` [E, K] as ``nn.Parameter``.

    Parameter names are ``mu``, ``log_sigma`` and ``alpha_<cell>``; :meth:`named_tensors`
    gives them in a fixed order, which is also the layout of :meth:`flat`.
    """

    def __init__(self, mu: torch.Tensor, log_sigma: torch.Tensor,
                 alpha: dict[str, torch.Tensor]) -> None:
        super().__init__()
        if mu.shape != log_sigma.shape or mu.ndim != 1:
            raise ValueError(f"mu and log_sigma must be equal 1-d shapes, got {tuple(mu.shape)} "
                             f"and {tuple(log_sigma.shape)}")
        self.mu = nn.Parameter(mu.detach().clone())
        self.log_sigma = nn.Parameter(log_sigma.detach().clone())
        self.cells = tuple(alpha)
        for cell, a in alpha.items():
            self.register_parameter(f"alpha_{cell}", nn.Parameter(a.detach().clone()))

    @classmethod
    def from_supernet(cls, net: SuperNet, *, init_scale: float = defaults.INIT_SCALE,
                      alpha_init: float = 0.0) -> MetaParams:
        """``mu`` = the supernet's initial weights, ``sigma = init_scale``, uniform ``alpha``."""
        if not (math.isfinite(init_scale) and init_scale > 0):
            raise ValueError(f"init_scale must be > 0, got {init_scale!r}")
        spec = ParamSpec.from_module(net)
        mu = spec.flatten(dict(net.named_parameters())).detach()
        space = net.space
        alpha = {c: torch.full(space.z_shape, alpha_init, dtype=mu.dtype, device=mu.device)
                 for c in space.cell_types}
        return cls(mu, torch.full_like(mu, math.log(init_scale)), alpha)

    def alpha(self, cell: str) -> torch.Tensor:
        return getattr(self, f"alpha_{cell}")

    def named_tensors(self) -> dict[str, torch.Tensor]:
        return {"mu": self.mu, "log_sigma": self.log_sigma,
                **{f"alpha_{c}": self.alpha(c) for c in self.cells}}

    def check_space(self, space: SearchSpace, n_weights: int) -> None:
        if self.mu.numel() != n_weights:
            raise ValueError(f"W has {self.mu.numel()} weights but the supernet has {n_weights}")
        for c in self.cells:
            if tuple(self.alpha(c).shape) != space.z_shape:
                raise ValueError(f"alpha_{c} has shape {tuple(self.alpha(c).shape)}, the search "
                                 f"space expects {space.z_shape}")


class WeightPrior(nn.Module, ABC):
    """A Gaussian prior of the flat weight vector: :meth:`loc_scale` is its one definition,
    used by the Pyro model (:meth:`dist`) and by the Pyro-free ELBO alike."""

    @abstractmethod
    def loc_scale(self, W: MetaParams) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale, each of shape [P]."""

    def dist(self, W: MetaParams) -> dist.TorchDistribution:
        """The prior of the flat weight vector, event shape [P]."""
        return dist.Normal(*self.loc_scale(W)).to_event(1)


class LearnedGaussianPrior(WeightPrior):
    """``theta ~ Normal(W.mu, exp(W.log_sigma))``: BASE's meta-learned weight prior."""

    def loc_scale(self, W: MetaParams) -> tuple[torch.Tensor, torch.Tensor]:
        return W.mu, W.log_sigma.exp()


class FixedGaussianPrior(WeightPrior):
    """``theta ~ Normal(loc, scale)`` with constants; ``W`` is then only the guide's start."""

    def __init__(self, *, scale: float = defaults.PRIOR_SCALE, loc: float = 0.0) -> None:
        super().__init__()
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"FixedGaussianPrior scale must be > 0, got {scale!r}")
        self.scale = float(scale)
        self.loc = float(loc)

    def loc_scale(self, W: MetaParams) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full_like(W.mu, self.loc), torch.full_like(W.mu, self.scale)


class ArchPrior(nn.Module, ABC):
    @abstractmethod
    def logits(self, W: MetaParams, cell: str) -> torch.Tensor:
        """Prior logits ``[E, K]`` of the op choice on every edge of cell type ``cell``."""


class LearnedCategoricalPrior(ArchPrior):
    """``z_c ~ Cat(softmax W.alpha_c)``: BASE's meta-learned architecture prior."""

    def logits(self, W: MetaParams, cell: str) -> torch.Tensor:
        return W.alpha(cell)


class UniformCategoricalPrior(ArchPrior):
    """Every op equally likely on every edge."""

    def logits(self, W: MetaParams, cell: str) -> torch.Tensor:
        return torch.zeros_like(W.alpha(cell))


def make_weight_prior(name: str, *, scale: float = defaults.PRIOR_SCALE) -> WeightPrior:
    if name == "learned":
        return LearnedGaussianPrior()
    if name == "fixed":
        return FixedGaussianPrior(scale=scale)
    raise ValueError(f"unknown weight prior {name!r}; expected 'learned' or 'fixed'")


def make_arch_prior(name: str) -> ArchPrior:
    if name == "learned":
        return LearnedCategoricalPrior()
    if name == "uniform":
        return UniformCategoricalPrior()
    raise ValueError(f"unknown architecture prior {name!r}; expected 'learned' or 'uniform'")
