"""The inner-loop negative ELBO of :class:`~pyro_base.models.base_model.BASEModel` without Pyro's
tracing.

:class:`~pyro.infer.TraceMeanField_ELBO` on the BASE model and an
:class:`~pyro_base.inference.vi.guides.AdaptedPosterior` computes, per datum (divided by ``N /
beta``)::

    L_hat = (1 / B) sum_{n in batch} -log p(y_n | x_n, theta, z)
            + (beta / N) [ KL(q(theta) || p(theta)) + sum_c KL(Cat(softmax phi_c) || Cat(p_c)) ]

with one reparameterised sample ``theta = loc + scale * eps`` (``eps ~ N(0, I)``; ``theta = loc``
for a ``delta`` posterior, whose "KL" is ``-log p(loc)``) and, per cell type in ``W.cells``
order, one log-space Concrete sample ``log z_c = log_softmax((log_softmax(phi_c) + g) / tau)``
(``g`` Gumbel, drawn as ``-log(-log(u))`` from ``u = clamp_probs(rand)``), hard one-hot with the
soft gradient for :class:`~pyro_base.models.relaxations.StraightThrough`. :func:`functional_loss`
writes
that out with plain tensor operations, drawing the noise with the same calls in the same order
as Pyro's guide, so on the same RNG state it returns the Pyro loss (and gradients) to float
rounding. It skips Pyro's effect handlers, trace bookkeeping and distribution validation.

Supported: the weight priors :class:`~pyro_base.models.priors.LearnedGaussianPrior` and
:class:`~pyro_base.models.priors.FixedGaussianPrior`, any
:class:`~pyro_base.models.priors.ArchPrior`, and the
relaxations ``Concrete(kl="analytic")`` and ``StraightThrough`` (:func:`check_supported`).
``Concrete(kl="mc")`` scores samples with the relaxed density: use the Pyro ELBO for it.

The ELBO objects :class:`FunctionalELBO` and :class:`PyroELBO` share one ``loss`` signature
(``FunctionalELBO`` also takes an optional ``class_mask``, for the static loop);
the guide takes either (``OptimizationEmbeddingGuide(model, elbo=FunctionalELBO())``), as Pyro's
``SVI(model, guide, optim, loss=...)`` takes its loss.

Usage::

    check_supported(model)
    loss = functional_loss(model, post.params, x, y, size=N, n_classes=5, temperature=0.5,
                           weight_posterior="gaussian")   # == guide.loss(post, x, y, ...)
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from pyro.infer import TraceMeanField_ELBO

from pyro_base.models.base_model import BASEModel
from pyro_base.models.priors import FixedGaussianPrior, LearnedGaussianPrior, MetaParams
from pyro_base.models.relaxations import (
    Concrete,
    StraightThrough,
    categorical_kl,
    check_temperature,
    concrete_log_sample,
)


def check_supported(model: object) -> None:
    """Raise a ValueError unless :func:`functional_loss` reproduces the Pyro ELBO for ``model``."""
    if not isinstance(model, BASEModel):
        raise ValueError(f"the functional ELBO needs a BASEModel, got {type(model).__name__}; "
                         "use elbo_impl='pyro'")
    relax = model.relaxation
    if not (isinstance(relax, StraightThrough)
            or (isinstance(relax, Concrete) and relax.kl == "analytic")):
        raise ValueError(f"the functional ELBO supports Concrete(kl='analytic') and "
                         f"StraightThrough, got {relax!r}; use elbo_impl='pyro'")
    if not isinstance(model.weight_prior, LearnedGaussianPrior | FixedGaussianPrior):
        raise ValueError(f"the functional ELBO supports the Gaussian weight priors, got "
                         f"{type(model.weight_prior).__name__}; use elbo_impl='pyro'")


def gaussian_kl(q_loc: torch.Tensor, q_scale: torch.Tensor, p_loc: torch.Tensor,
                p_scale: torch.Tensor) -> torch.Tensor:
    """``sum KL(N(q_loc, q_scale) || N(p_loc, p_scale))``, written as torch writes it."""
    var_ratio = (q_scale / p_scale).pow(2)
    t1 = ((q_loc - p_loc) / p_scale).pow(2)
    return (0.5 * (var_ratio + t1 - 1 - var_ratio.log())).sum()


def gaussian_log_prob(value: torch.Tensor, loc: torch.Tensor,
                      scale: torch.Tensor) -> torch.Tensor:
    """``sum log N(value; loc, scale)``."""
    var = scale**2
    return (-((value - loc) ** 2) / (2 * var) - scale.log()
            - 0.5 * torch.log(torch.tensor(2 * torch.pi, dtype=value.dtype))).sum()


def functional_loss(model: BASEModel, params: dict[str, torch.Tensor], x: torch.Tensor,
                    y: torch.Tensor, *, size: int, n_classes: int | None,
                    temperature: float | torch.Tensor, weight_posterior: str = "gaussian",
                    class_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-datum negative ELBO ``(beta / N) * (-ELBO)``: the Pyro-free twin of
    :meth:`~pyro_base.inference.vi.guides.OptimizationEmbeddingGuide.loss`.

    :param params: posterior parameters ``mu``, ``log_sigma`` (unused for ``delta``) and
        ``alpha_<cell>``, as in :class:`~pyro_base.inference.vi.guides.AdaptedPosterior`.
    :param size: the task size ``N`` (the batch ``x`` may be a subsample of it).
    :param temperature: a number, or a 0-d tensor (a static buffer of a captured CUDA graph,
        :mod:`pyro_base.inference.vi.static_loop`; not validated here, the caller checks it).
    :param class_mask: instead of ``n_classes`` (pass ``None``): a boolean tensor over all
        ``space.n_classes`` outputs, ``True`` for the task's classes. The other logits are set to
        ``-inf``, which gives the loss of the first ``n_classes`` logits while the shapes stay
        fixed (a captured graph serves tasks of any class count).
    """
    W: MetaParams = model.meta_params
    if not isinstance(temperature, torch.Tensor):
        check_temperature(temperature)
    if n_classes is not None and not 2 <= n_classes <= model.space.n_classes:
        raise ValueError(f"n_classes must be in [2, {model.space.n_classes}] for this search "
                         f"space, got {n_classes}")
    batch = x.shape[0]
    if size < batch:
        raise ValueError(f"size (task size {size}) must be >= the batch size {batch}")
    p_loc, p_scale = model.weight_prior.loc_scale(W)
    loc = params["mu"]
    if weight_posterior == "delta":
        theta = loc
        kl = -gaussian_log_prob(loc, p_loc, p_scale)
    else:
        q_scale = params["log_sigma"].exp()
        eps = torch.empty_like(loc).normal_()  # Normal.rsample's draw
        theta = loc + eps * q_scale
        kl = gaussian_kl(loc, q_scale, p_loc, p_scale)
    z = {}
    for cell in W.cells:
        phi = params[f"alpha_{cell}"]
        # the relaxation's own sampler and weights: the same draws and values as its Pyro site
        log_z = concrete_log_sample(phi - phi.logsumexp(-1, keepdim=True), temperature)
        z[cell] = model.relaxation.weights_from_log_sample(log_z)
        kl = kl + categorical_kl(phi, model.arch_prior.logits(W, cell)).sum()
    logits = model.net_logits(x, theta, z, n_classes)
    if class_mask is not None:
        logits = torch.where(class_mask, logits, float("-inf"))
    nll = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
    scale = size / batch / model.beta
    return (kl + scale * nll) * (model.beta / size)


class FunctionalELBO:
    """The Pyro-free ELBO object: :func:`functional_loss` of a posterior, per datum.

    Same ``loss`` signature as :class:`PyroELBO`, equal to it to float rounding (for the
    supported models, :func:`check_supported`); about half the Python overhead per step.
    """

    name = "functional"

    def loss(self, model: BASEModel, post: Any, x: torch.Tensor, y: torch.Tensor, *,
             size: int, n_classes: int | None, temperature: float | torch.Tensor,
             class_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(beta / N) * (-ELBO)`` of ``post`` (an ``AdaptedPosterior``) on the batch."""
        return functional_loss(model, post.params, x, y, size=size, n_classes=n_classes,
                               temperature=temperature, weight_posterior=post.weight_posterior,
                               class_mask=class_mask)


class PyroELBO:
    """Pyro's ``TraceMeanField_ELBO`` of the model and the posterior (a guide), per datum.

    Works for every model and relaxation (``Concrete(kl="mc")`` included); the reference the
    functional ELBO is tested against.
    """

    name = "pyro"

    def __init__(self) -> None:
        self.elbo = TraceMeanField_ELBO()

    def loss(self, model: BASEModel, post: Any, x: torch.Tensor, y: torch.Tensor, *,
             size: int, n_classes: int | None, temperature: float) -> torch.Tensor:
        """``(beta / N) * (-ELBO)`` of ``post`` on the batch, differentiable."""
        with warnings.catch_warnings():
            # Straight-through z sites have a NaN log_prob by design (never scored; the
            # registered analytic KL is used): silence Pyro's per-trace NaN warning for them.
            warnings.filterwarnings("ignore", message="Encountered NaN: log_prob_sum at site 'z_")
            loss = self.elbo.differentiable_loss(model, post, x, y, size=size,
                                                 n_classes=n_classes, temperature=temperature)
        return loss * model.beta / size
