"""The optimization-embedding posterior of BASE, and Pyro autoguides on the same model.

The posterior objects themselves (:class:`AdaptedPosterior`, :func:`autoguide_from_W`) live in
:mod:`pyro_base.inference.vi.posterior_q` and are re-exported here.

For a task ``D`` the posterior parameters start at the meta-parameters and follow ``T`` steps
of stochastic gradient descent on the task's negative ELBO (Shaw et al. 2019, eq. for
``[phi^t, psi^t]``; Dai et al. 2018, coupled variational Bayes)::

    (phi_0, psi_0) = W = (alpha, (mu, log sigma))
    (phi_t, psi_t) = (phi_{t-1}, psi_{t-1}) - eta * grad L_hat(phi_{t-1}, psi_{t-1})
    q(z_c | D) = Relaxed(tau, logits = phi_T[c]),   q(theta | D) = Normal(psi_T.loc, psi_T.scale)

``L_hat`` is the one-sample :class:`~pyro.infer.TraceMeanField_ELBO` estimate (analytic KL
terms) on a support minibatch, divided by ``N / beta`` so that step sizes are per datum:
``L_hat = mean_n E_q[-log p(y_n)] + (beta / N) KL(q || p)``. On the location of theta the KL
has curvature ``beta / (N sigma^2)``, so plain SGD is stable only for
``inner_lr < 2 N sigma^2 / beta``; the default ``inner_optimizer="adam"`` (a functional,
differentiable Adam) normalises step sizes per coordinate and is stable at every sigma tried.

The unrolled steps are differentiable on request: ``order="first"`` gives ``d phi_T / d W = I``
(first-order MAML), ``order="second"`` back-propagates through every inner gradient.

Usage::

    guide = OptimizationEmbeddingGuide(model, inner_steps=5, inner_lr=0.01)
    post, losses = guide.adapt(x_s, y_s, n_classes=5, temperature=0.5)
    post(x_q, None, n_classes=5, temperature=0.5)     # a Pyro guide with fixed parameters
    Predictive(model, guide=post, num_samples=8)(x_q, n_classes=5, temperature=0.5)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

import pyro
import torch
from pyro import poutine

from pyro_base import defaults
from pyro_base.inference.vi.elbo import FunctionalELBO, PyroELBO, check_supported
from pyro_base.inference.vi.posterior_q import AdaptedPosterior
from pyro_base.inference.vi.posterior_q import autoguide_from_W as autoguide_from_W
from pyro_base.inference.vi.static_loop import StaticInnerLoop, check_dense_ok
from pyro_base.inference.vi.update import ADAM_BETAS, InnerUpdate
from pyro_base.models.base_model import BASEModel
from pyro_base.models.relaxations import check_temperature

ORDERS = ("none", "first", "second")
ELBO_IMPLS = ("pyro", "functional", "graph")
_InnerState = dict[str, tuple[torch.Tensor, torch.Tensor]]  # Adam's moments (SGD: empty)


class OptimizationEmbeddingGuide:
    """Runs the inner loop from ``model.W`` and returns an :class:`AdaptedPosterior`.

    ``model`` is a :class:`~pyro_base.models.base_model.BASEModel` or any Pyro model with the same
    contract: attributes ``W`` (a :class:`~pyro_base.models.priors.MetaParams`), ``beta`` and
    ``relaxation``, sites ``theta`` and ``z_<cell>`` for ``cell in W.cells``, and the call
    signature ``model(x, y, *, size, n_classes, temperature)``.

    :param inner_steps: ``T``.
    :param inner_lr: step size for the location of theta.
    :param arch_optimizer: the architecture logits' rule, ``"adam"`` or ``"sgd"`` (``None``:
        ``inner_optimizer``); see :class:`~pyro_base.inference.vi.update.InnerUpdate`.
    :param arch_lr: step size for the architecture logits (default ``inner_lr`` for Adam,
        ``10 * inner_lr`` for SGD).
    :param scale_lr: step size for ``log sigma`` of q(theta) (default ``inner_lr``).
    :param weight_posterior: ``"gaussian"`` or ``"delta"`` (point mass at the location).
    :param inner_optimizer: ``"adam"`` (functional, differentiable) or ``"sgd"``.
    :param inner_beta1: Adam's first-moment decay in the inner loop (0.9; ``0``: no momentum,
        the Reptile paper's inner Adam).
    :param batch_size: support minibatch per step (``None``: the whole support set).
    :param elbo_impl: ``"pyro"`` (default): :class:`~pyro.infer.TraceMeanField_ELBO`;
        ``"functional"``: the same loss written with plain tensor operations
        (:func:`~pyro_base.inference.vi.elbo.functional_loss`), equal to the Pyro loss and its
        gradients to float rounding on the same RNG state, without Pyro's per-step tracing.
        Needs a :class:`~pyro_base.models.base_model.BASEModel` with an analytic-KL relaxation.
        ``"graph"``: the functional loss, and the first-order inner loop (``order="none"``,
        Reptile) run over static buffers by
        :class:`~pyro_base.inference.vi.static_loop.StaticInnerLoop`,
        captured as one CUDA graph per support shape on CUDA (eager elsewhere, where it
        equals ``"functional"``). Every op is computed (no zero-op skipping), so it speeds
        up the relaxed estimator; hard samples on a zero-skipping supernet are refused.
    :param elbo: the ELBO object itself (:class:`~pyro_base.inference.vi.elbo.PyroELBO` or
        :class:`~pyro_base.inference.vi.elbo.FunctionalELBO`, or any object with their
        ``loss`` signature), as Pyro's ``SVI`` takes ``loss=``; default: the one ``elbo_impl``
        names. Giving it sets ``elbo_impl`` to its ``name`` unless ``elbo_impl="graph"``.
    :param validate_every_step: with Pyro's validation enabled (its default), check the
        distributions' arguments at every inner step instead of the first step of each
        ``adapt`` only (the later steps repeat the first step's shapes; this saves ~2 ms per
        step on a CPU, half of Pyro's overhead).
    """

    def __init__(self, model: BASEModel, *, inner_steps: int = defaults.INNER_STEPS,
                 inner_lr: float = defaults.INNER_LR,
                 arch_optimizer: str | None = defaults.ARCH_OPTIMIZER,
                 arch_lr: float | None = defaults.ARCH_LR,
                 scale_lr: float | None = None,
                 weight_posterior: str = "gaussian", inner_optimizer: str = "adam",
                 inner_beta1: float = ADAM_BETAS[0],
                 batch_size: int | None = defaults.INNER_BATCH, elbo_impl: str = "pyro",
                 validate_every_step: bool = False,
                 elbo: PyroELBO | FunctionalELBO | None = None) -> None:
        if inner_steps < 0:
            raise ValueError(f"inner_steps must be >= 0, got {inner_steps}")
        if weight_posterior not in ("gaussian", "delta"):
            raise ValueError(f"weight_posterior must be 'gaussian' or 'delta', got "
                             f"{weight_posterior!r}")
        self.update = InnerUpdate(optimizer=inner_optimizer, lr=inner_lr,
                                  arch_optimizer=arch_optimizer, arch_lr=arch_lr,
                                  scale_lr=scale_lr, weight_posterior=weight_posterior,
                                  beta1=inner_beta1)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if elbo_impl not in ELBO_IMPLS:
            raise ValueError(f"elbo_impl must be one of {ELBO_IMPLS}, got {elbo_impl!r}")
        if elbo is not None and elbo_impl != "graph":
            elbo_impl = getattr(elbo, "name", "custom")
        if elbo is None:
            elbo = PyroELBO() if elbo_impl == "pyro" else FunctionalELBO()
        if elbo_impl in ("functional", "graph"):
            check_supported(model)
        if elbo_impl == "graph":
            check_dense_ok(model)
        self.elbo_impl = elbo_impl
        self.model = model
        self.inner_steps = inner_steps
        # the resolved step sizes (the update rule's), for reading
        self.inner_lr = inner_lr
        self.arch_lr = self.update.step_size("alpha")
        self.scale_lr = self.update.step_size("log_sigma")
        self.weight_posterior = weight_posterior
        self.inner_optimizer = inner_optimizer
        self.inner_beta1 = inner_beta1
        self.arch_optimizer = self.update.rule("alpha")
        self.batch_size = batch_size
        self.validate_every_step = validate_every_step
        self.elbo = elbo
        self._static_loops: dict[tuple, StaticInnerLoop] = {}
        # one CUDA-graph memory pool per device, shared by this guide's static loops
        self.graph_pools: dict[str, tuple] = {}

    def posterior(self, params: dict[str, torch.Tensor]) -> AdaptedPosterior:
        return AdaptedPosterior(params, cells=self.model.W.cells,
                                relaxation=self.model.relaxation,
                                weight_posterior=self.weight_posterior)

    def prior_posterior(self) -> AdaptedPosterior:
        """``q = W`` itself: zero adaptation (the poster's "multi-task prior")."""
        return self.posterior({k: v.detach() for k, v in self.model.W.named_tensors().items()})

    def loss(self, post: AdaptedPosterior, x: torch.Tensor, y: torch.Tensor, *, size: int,
             n_classes: int, temperature: float) -> torch.Tensor:
        """Per-datum negative ELBO ``(beta / N) * (-ELBO)`` of ``post`` on a batch."""
        return self.elbo.loss(self.model, post, x, y, size=size, n_classes=n_classes,
                              temperature=temperature)

    def adapt(self, x: torch.Tensor, y: torch.Tensor, *, n_classes: int | None,
              temperature: float,
              steps: int | None = None, order: str = "none",
              callback: Callable[[int, float], None] | None = None,
              snapshot: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
              ) -> tuple[AdaptedPosterior, list[float]]:
        """Run ``steps`` (default ``inner_steps``) inner steps on the support set ``(x, y)``.

        Returns the adapted posterior and the per-step losses (before each step). With
        ``order="none"`` the result is detached from ``W``. A non-finite loss ends the loop
        early: the losses then end with it and the parameters are those it was computed at.
        ``callback(t, loss)`` sees each step's loss; ``snapshot(t, params)`` the detached
        parameters after step ``t`` (neither draws random numbers: the path is unchanged).
        """
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        if x.shape[0] == 0:
            raise ValueError("cannot adapt to an empty support set")
        check_temperature(temperature)
        steps = self.inner_steps if steps is None else steps
        if self.elbo_impl == "graph" and order == "none" and callback is None \
                and snapshot is None:
            return self._adapt_static(x, y, n_classes=n_classes, temperature=temperature,
                                      steps=steps)
        params, names, state = self._start(order)
        N = x.shape[0]
        B = N if self.batch_size is None else min(self.batch_size, N)
        losses: list[float] = []
        for t in range(1, steps + 1):
            idx = torch.randperm(N, device=x.device)[:B] if B < N else None
            xb, yb = (x, y) if idx is None else (x[idx], y[idx])
            # Pyro validates distribution arguments at the first step only (if enabled): the
            # later steps have the same shapes, and a non-finite loss ends the loop anyway
            with (contextlib.nullcontext() if t == 1 or self.validate_every_step
                  else pyro.validation_enabled(False)):
                loss = self.loss(self.posterior(params), xb, yb, size=N, n_classes=n_classes,
                                 temperature=temperature)
            losses.append(float(loss.detach()))
            if callback is not None:
                callback(t, losses[-1])
            if not math.isfinite(losses[-1]):
                break  # NaN parameters would fail validation at the next step; caller decides
            grads = torch.autograd.grad(loss, [params[n] for n in names],
                                        create_graph=order == "second")
            params = self._inner_step(params, names, grads, state, t, order)
            if snapshot is not None:
                snapshot(t, {n: p.detach() for n, p in params.items()})
        if order == "none":
            params = {n: p.detach() for n, p in params.items()}
        return self.posterior(params), losses

    def _start(self, order: str) -> tuple[dict[str, torch.Tensor], list[str], _InnerState]:
        """The inner loop's start ``W`` (detached and a leaf under ``order="none"``), the names
        of the parameters it moves, and the update rule's state."""
        start = self.model.W.named_tensors()
        names = self.update.moving(start)
        params = {n: (start[n] if order != "none" else start[n].detach()) for n in start}
        if order == "none":
            for n in names:
                params[n].requires_grad_(True)
        state = self.update.init_state(params, names)
        return params, names, state

    def _inner_step(self, params: dict[str, torch.Tensor], names: list[str],
                    grads: Sequence[torch.Tensor], state: _InnerState, t: int,
                    order: str) -> dict[str, torch.Tensor]:
        """Inner step ``t``: ``params`` with the moving ``names`` updated from ``grads``."""
        new = dict(params)
        for n, g in zip(names, grads, strict=True):
            g = g if order == "second" else g.detach()
            new[n] = self.update.step(n, params[n], g, state, t)
            if order == "none":
                new[n] = new[n].detach().requires_grad_(True)
        return new

    def adapt_path(self, x: torch.Tensor, y: torch.Tensor, *, n_classes: int | None,
                   temperature: float, steps: Sequence[int],
                   ) -> tuple[dict[int, AdaptedPosterior], list[float]]:
        """One first-order inner loop to ``max(steps)``; the posterior after each of ``steps``.

        The posterior at ``k`` steps equals ``adapt(..., steps=k)`` from the same RNG state
        (``0``: ``W`` itself); after an early stop on a non-finite loss, the later step counts
        get the parameters the loop stopped at, as ``adapt`` would return them.
        """
        wanted = sorted(set(steps))
        if not wanted or wanted[0] < 0:
            raise ValueError(f"steps must be a non-empty list of ints >= 0, got {steps!r}")
        kept: dict[int, dict[str, torch.Tensor]] = {}

        def keep(t: int, params: dict[str, torch.Tensor]) -> None:
            if t in wanted:
                kept[t] = params

        last, losses = self.adapt(x, y, n_classes=n_classes, temperature=temperature,
                                  steps=wanted[-1], snapshot=keep)
        out = {k: (self.posterior(kept[k]) if k in kept else last) for k in wanted if k > 0}
        return ({0: self.prior_posterior()} if wanted[0] == 0 else {}) | out, losses

    def static_loop(self, *, x_shape: tuple[int, ...], size: int, tasks: int | None,
                    device: torch.device, dtype: torch.dtype,
                    randomness: str = "different") -> StaticInnerLoop:
        """The cached :class:`~pyro_base.inference.vi.static_loop.StaticInnerLoop` for these shapes
        (CUDA-graphed when ``elbo_impl="graph"`` and ``device`` is CUDA). A captured graph
        bakes in the step sizes, optimizer and ``beta``: they are part of the cache key."""
        batch = size if self.batch_size is None else min(self.batch_size, size)
        key = (tuple(x_shape), size, batch, tasks, str(device), dtype, randomness,
               self.inner_lr, self.arch_lr, self.scale_lr, self.inner_optimizer,
               self.arch_optimizer, self.inner_beta1, self.weight_posterior, self.model.beta)
        if key not in self._static_loops:
            self._static_loops[key] = StaticInnerLoop(
                self, x_shape=tuple(x_shape), size=size, batch=batch, tasks=tasks,
                capture=self.elbo_impl == "graph" and device.type == "cuda",
                randomness=randomness, device=device, dtype=dtype)
        return self._static_loops[key]

    def _adapt_static(self, x: torch.Tensor, y: torch.Tensor, *, n_classes: int | None,
                      temperature: float, steps: int) -> tuple[AdaptedPosterior, list[float]]:
        loop = self.static_loop(x_shape=tuple(x.shape[1:]), size=x.shape[0], tasks=None,
                                device=x.device, dtype=self.model.W.mu.dtype)
        params, losses = loop.run(self.model.W.named_tensors(), x, y, n_classes=n_classes,
                                  temperature=temperature, steps=steps)
        return self.posterior(params), finite_prefix(losses.tolist())

    def freeze(self, x: torch.Tensor, y: torch.Tensor, *, n_classes: int | None,
               temperature: float, steps: int | None = None) -> AdaptedPosterior:
        """Adapt once to ``(x, y)`` and return the frozen posterior (detached from ``W``).

        ``Predictive(model, guide=guide.freeze(...))`` and the ArviZ export then draw from it
        without re-running the inner loop for every sample.
        """
        post, _ = self.adapt(x, y, n_classes=n_classes, temperature=temperature, steps=steps)
        return post

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None, *,
                 size: int | None = None, n_classes: int | None = None,
                 temperature: float = 1.0) -> None:
        """Pyro guide interface: adapt on ``(x, y)``, then sample the adapted posterior."""
        if y is None:
            raise ValueError("OptimizationEmbeddingGuide needs labels to adapt; adapt once with "
                             "guide.adapt(...) and pass the returned posterior to Predictive")
        with poutine.block():  # the inner loop's own traces stay out of the caller's trace
            post, _ = self.adapt(x, y, n_classes=n_classes, temperature=temperature,
                                 order="first")
        post(x, y, size=size, n_classes=n_classes, temperature=temperature)


def finite_prefix(losses: list[float]) -> list[float]:
    """The losses up to and including the first non-finite one (where a loop stops)."""
    for i, v in enumerate(losses):
        if not math.isfinite(v):
            return losses[:i + 1]
    return losses
