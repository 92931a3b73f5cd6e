"""The variational posterior ``q(theta, z | D)`` as an object: frozen parameters, or a Pyro
autoguide started at ``W``.

:class:`AdaptedPosterior` is what
:meth:`~pyro_base.inference.vi.guides.OptimizationEmbeddingGuide.adapt` returns: the adapted
parameters ``[phi_T, psi_T]`` held fixed, callable as a Pyro guide::

    q(z_c | D) = Relaxed(tau, logits = phi_T[c]),   q(theta | D) = Normal(psi_T.loc, psi_T.scale)

:func:`autoguide_from_W` builds Pyro's ``AutoNormal`` / ``AutoDelta`` on the same model, started
at the meta-parameters. Both are re-exported by :mod:`pyro_base.inference.vi.guides`.

Usage::

    post = AdaptedPosterior(params, cells=model.W.cells, relaxation=model.relaxation)
    post(x_q, None, n_classes=5, temperature=0.5)     # a Pyro guide with fixed parameters
    post.op_probs()["normal"], post.genotype(model.space)
    autoguide = autoguide_from_W(model, kind="normal")
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoDelta, AutoNormal, init_to_value

from pyro_base.models.base_model import BASEModel
from pyro_base.models.relaxations import Relaxation


class AdaptedPosterior:
    """``q(theta, z | D)`` with frozen parameters; callable as a Pyro guide.

    ``params`` uses the names of :class:`~pyro_base.models.priors.MetaParams`: ``mu`` (location of
    theta), ``log_sigma`` (its log scale; ignored for a ``delta`` posterior) and
    ``alpha_<cell>`` (logits of the op choice per edge).
    """

    def __init__(self, params: dict[str, torch.Tensor], *, cells: tuple[str, ...],
                 relaxation: Relaxation, weight_posterior: str = "gaussian") -> None:
        self.params = params
        self.cells = cells
        self.relaxation = relaxation
        self.weight_posterior = weight_posterior

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None, *,
                 size: int | None = None, n_classes: int | None = None,
                 temperature: float = 1.0) -> None:
        loc = self.params["mu"]
        if self.weight_posterior == "delta":
            pyro.sample("theta", dist.Delta(loc, event_dim=1))
        else:
            pyro.sample("theta", dist.Normal(loc, self.params["log_sigma"].exp()).to_event(1))
        for cell in self.cells:
            pyro.sample(f"z_{cell}", self.relaxation.dist(self.params[f"alpha_{cell}"],
                                                          temperature))

    def op_probs(self) -> dict[str, torch.Tensor]:
        """``softmax(phi_T[c])`` per cell type: the posterior op probabilities, [E, K]."""
        return {c: self.params[f"alpha_{c}"].detach().softmax(-1) for c in self.cells}

    def detach(self) -> AdaptedPosterior:
        return AdaptedPosterior({k: v.detach() for k, v in self.params.items()},
                                cells=self.cells, relaxation=self.relaxation,
                                weight_posterior=self.weight_posterior)

    def clone(self) -> AdaptedPosterior:
        """A posterior with its own copy of the parameters: one after 0 steps is ``W`` itself,
        whose tensors a later start overwrites in place."""
        return AdaptedPosterior({k: v.detach().clone() for k, v in self.params.items()},
                                cells=self.cells, relaxation=self.relaxation,
                                weight_posterior=self.weight_posterior)

    def genotype(self, space, *, rule: str = "base"):  # noqa: ANN001, ANN201
        """The posterior mode's discrete genotype (BASE decoding rule by default)."""
        from pyro_base.genotype import decode

        return decode(self.op_probs(), space=space, rule=rule)


def autoguide_from_W(model: BASEModel, kind: str = "normal") -> AutoNormal | AutoDelta:
    """Pyro's ``AutoNormal`` / ``AutoDelta`` started at ``W`` with ``init_scale = sigma``.

    Their default ``init_scale=0.1`` is far above a prior scale of ~0.03, which makes a huge
    KL at step 0. ``W`` is held fixed (empirical Bayes only with ``learn_prior_in_svi``).
    """
    W = model.W
    init = {"theta": W.mu.detach().clone(),
            **{f"z_{c}": _log_uniform_like(W.alpha(c)) for c in model.space.cell_types}}
    if kind == "normal":
        scale = float(W.log_sigma.detach().exp().mean())
        return AutoNormal(model, init_loc_fn=init_to_value(values=init), init_scale=scale)
    if kind == "delta":
        return AutoDelta(model, init_loc_fn=init_to_value(values=init))
    raise ValueError(f"unknown autoguide kind {kind!r}; expected 'normal' or 'delta'")


def _log_uniform_like(alpha: torch.Tensor) -> torch.Tensor:
    """A point inside the support of both relaxations: log of uniform simplex weights."""
    return torch.full_like(alpha.detach(), -math.log(alpha.shape[-1]))
