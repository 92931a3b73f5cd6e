"""Relaxed categorical distributions for the architecture sites ``z_<cell>``, and temperatures.

A site ``z_c`` has event shape ``[E, K]``: one relaxed one-hot vector per edge. Two relaxations:

* :class:`Concrete` (Gumbel-softmax, Maddison et al. 2017; Jang et al. 2017) sampled *in log
  space* (torch's ``ExpRelaxedCategorical``): the site value is ``log z``, which stays finite in
  float32 down to tau = 0.05, where ``RelaxedOneHotCategorical`` leaves the simplex. Its KL term
  is either the Monte Carlo estimate from the log-space Concrete density (``kl="mc"``) or the
  analytic categorical surrogate ``KL(Cat(softmax phi) || Cat(softmax alpha))`` per edge
  (``kl="analytic"``, the default: measured on a 9-edge x 5-op probe, the one-sample density
  estimate was ~105 +- 12 against an analytic categorical KL of ~9.9).
* :class:`StraightThrough`: forward value is the hard one-hot ``argmax`` of the Concrete
  sample, backward through the soft sample. The supernet (``skip_zero=True``, the default)
  does not compute ops whose weight is exactly 0, so only the selected op's weight gets a
  gradient from the likelihood (through the soft sample's softmax, which still moves every
  logit): that is GDAS' estimator (Dong & Yang, CVPR 2019). ``SuperNet(skip_zero=False)``
  computes every op and gives the full straight-through gradient at the full cost. Such samples
  are never scored with a relaxed density: the KL is always the analytic categorical
  surrogate, and ``log_prob`` is NaN.

Both registered KLs are used by :class:`pyro.infer.TraceMeanField_ELBO`.

Usage::

    relax = Concrete(kl="analytic")
    d = relax.dist(logits, temperature=0.5)         # event shape [E, K]
    z = relax.weights(d.rsample())                  # simplex weights for the supernet
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin
from torch.distributions import constraints, register_kl
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical
from torch.distributions.utils import clamp_probs

_EMPTY = torch.Size()


def check_temperature(temperature: float) -> float:
    if not (isinstance(temperature, int | float) and math.isfinite(temperature)
            and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def concrete_log_sample(log_probs: torch.Tensor,
                        temperature: float | torch.Tensor) -> torch.Tensor:
    """One log-space Concrete sample per row of normalised logits ``log_probs`` [..., K]::

        g = -log(-log u),  u ~ U(0, 1);   log z = log_softmax((log_probs + g) / tau)

    torch's ``ExpRelaxedCategorical.rsample``, draw for draw; the one definition used by the
    Pyro distributions here and by the Pyro-free ELBO."""
    u = clamp_probs(torch.rand(log_probs.shape, dtype=log_probs.dtype, device=log_probs.device))
    gumbels = -((-(u.log())).log())
    scores = (log_probs + gumbels) / temperature
    return scores - scores.logsumexp(-1, keepdim=True)


def straight_through(soft: torch.Tensor) -> torch.Tensor:
    """The one-hot of ``soft``'s argmax in the forward pass, ``soft``'s gradient backward
    (built by ``scatter``, not ``F.one_hot``, which checks indices on the host and so
    breaks ``vmap``)."""
    hard = torch.zeros_like(soft).scatter(-1, soft.argmax(-1, keepdim=True), 1.0)
    return hard + (soft - soft.detach())  # forward value exactly one-hot


class ExpConcrete(ExpRelaxedCategorical, TorchDistributionMixin):
    """Log-space Concrete: samples ``log z`` with ``z ~ RelaxedOneHotCategorical``."""

    def rsample(self, sample_shape: torch.Size = _EMPTY) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        return concrete_log_sample(self.logits.expand(shape), self.temperature)

    def expand(self, batch_shape, _instance=None):  # keep the subclass on expand
        new = self._get_checked_instance(type(self), _instance)
        return super().expand(batch_shape, _instance=new)


class ExpConcreteCategoricalKL(ExpConcrete):
    """:class:`ExpConcrete` whose KL against itself is the analytic categorical KL."""


class StraightThroughConcrete(torch.distributions.Distribution, TorchDistributionMixin):
    """Hard one-hot samples with the soft Concrete sample's gradient (straight-through)."""

    arg_constraints = {"logits": constraints.real_vector}
    support = constraints.simplex
    has_rsample = True

    def __init__(self, temperature: torch.Tensor | float, logits: torch.Tensor,
                 validate_args: bool | None = None) -> None:
        self._soft = ExpConcrete(temperature, logits=logits)
        self.logits = self._soft.logits
        self.temperature = self._soft.temperature
        super().__init__(self._soft.batch_shape, self._soft.event_shape, validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return StraightThroughConcrete(self.temperature,
                                       self.logits.expand(*batch_shape, self.logits.shape[-1]))

    def rsample(self, sample_shape: torch.Size = _EMPTY) -> torch.Tensor:
        return straight_through(self._soft.rsample(sample_shape).exp())

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """NaN: a hard sample has no density under the relaxation.

        Pyro computes every site's ``log_prob`` while tracing; :class:`TraceMeanField_ELBO`
        then uses the registered analytic KL and never reads it. Any estimator that *does*
        score the sample gets a NaN loss (and Pyro's NaN warning) instead of a biased number.
        """
        shape = value.shape[: value.dim() - len(self.event_shape)]
        return value.new_full(shape, float("nan"))


def categorical_kl(q_logits: torch.Tensor, p_logits: torch.Tensor) -> torch.Tensor:
    """``KL(Cat(softmax q) || Cat(softmax p))`` over the last axis."""
    q_log = q_logits.log_softmax(-1)
    p_log = p_logits.log_softmax(-1)
    return (q_log.exp() * (q_log - p_log)).sum(-1)


@register_kl(ExpConcreteCategoricalKL, ExpConcreteCategoricalKL)
def _kl_concrete(q: ExpConcreteCategoricalKL, p: ExpConcreteCategoricalKL) -> torch.Tensor:
    return categorical_kl(q.logits, p.logits)


@register_kl(StraightThroughConcrete, StraightThroughConcrete)
def _kl_straight_through(q: StraightThroughConcrete, p: StraightThroughConcrete) -> torch.Tensor:
    return categorical_kl(q.logits, p.logits)


class Relaxation(ABC):
    """How an architecture site is sampled and turned into supernet weights."""

    name: str = "relaxation"

    @abstractmethod
    def base_dist(self, logits: torch.Tensor, temperature: float) -> TorchDistributionMixin:
        """A distribution with batch shape [E] and event shape [K]."""

    def dist(self, logits: torch.Tensor, temperature: float) -> TorchDistributionMixin:
        """The site distribution, event shape ``[E, K]``."""
        return self.base_dist(logits, check_temperature(temperature)).to_event(1)

    @abstractmethod
    def weights(self, value: torch.Tensor) -> torch.Tensor:
        """Site value -> non-negative op weights ``[E, K]``."""

    def weights_from_log_sample(self, log_z: torch.Tensor) -> torch.Tensor:
        """The supernet's op weights from a log-space Concrete sample (the Pyro-free path):
        what :meth:`weights` gives for the site value this relaxation samples."""
        return self.weights(log_z)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Concrete(Relaxation):
    """Gumbel-softmax in log space; ``kl`` is ``"analytic"`` (surrogate) or ``"mc"``."""

    name = "concrete"

    def __init__(self, *, kl: str = "analytic") -> None:
        if kl not in ("analytic", "mc"):
            raise ValueError(f"kl must be 'analytic' or 'mc', got {kl!r}")
        self.kl = kl

    def base_dist(self, logits: torch.Tensor, temperature: float) -> TorchDistributionMixin:
        cls = ExpConcreteCategoricalKL if self.kl == "analytic" else ExpConcrete
        return cls(torch.as_tensor(temperature, dtype=logits.dtype, device=logits.device),
                   logits=logits)

    def weights(self, value: torch.Tensor) -> torch.Tensor:
        return value.exp()

    def __repr__(self) -> str:
        return f"Concrete(kl={self.kl!r})"


class StraightThrough(Relaxation):
    """Hard one-hot forward, soft backward; KL is always the analytic categorical surrogate."""

    name = "straight_through"

    def base_dist(self, logits: torch.Tensor, temperature: float) -> TorchDistributionMixin:
        return StraightThroughConcrete(
            torch.as_tensor(temperature, dtype=logits.dtype, device=logits.device), logits
        )

    def weights(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def weights_from_log_sample(self, log_z: torch.Tensor) -> torch.Tensor:
        return straight_through(log_z.exp())


def make_relaxation(name: str, **kwargs: object) -> Relaxation:
    """``"concrete"`` (optionally ``kl="mc"``) or ``"straight_through"``."""
    table: dict[str, type[Relaxation]] = {"concrete": Concrete,
                                          "straight_through": StraightThrough}
    if name not in table:
        raise ValueError(f"unknown relaxation {name!r}; expected one of {sorted(table)}")
    return table[name](**kwargs)  # type: ignore[arg-type]
