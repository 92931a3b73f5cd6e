"""The inner loop of C tasks in one batched computation (``torch.func.vmap``), without Pyro.

:meth:`~inference.guides.OptimizationEmbeddingGuide.adapt` runs one task at a time; a meta-step
runs it ``C`` times, so every op of the supernet is launched ``C * T`` times. Here the ``C``
posteriors are stacked (leading axis ``C``) and each inner step is one
``vmap(grad_and_value(functional_loss), randomness="different")`` call, followed by the same
(elementwise, so batched) SGD or functional-Adam update as the guide's. Convolutions with
per-task weights become batched/grouped kernels: fewer, larger launches.

Requirements (checked): a model :func:`~inference.functional_elbo.check_supported` accepts,
whose supernet has ``skip_zero=False`` (zero-op skipping is data-dependent control flow) and
batch-statistics BatchNorm (``track_running_stats=False``, the search default); tasks of equal
support size, full-batch steps (``guide.batch_size`` is ignored) and ``order="none"``. Each task
draws its own noise, so results equal the sequential loop in distribution, and exactly when
the noise is shared (``randomness="same"``, tested).

Usage::

    model = BASEModel(SuperNet(space, skip_zero=False), beta=0.01)
    guide = OptimizationEmbeddingGuide(model, inner_steps=5)
    params, losses = batched_adapt(guide, xs, ys, n_classes=5, temperature=0.5)  # [C, ...]
"""

from __future__ import annotations

import torch
from torch.func import grad_and_value, vmap

from inference.functional_elbo import check_supported, functional_loss
from inference.guides import OptimizationEmbeddingGuide, _functional_adam


def batched_adapt(guide: OptimizationEmbeddingGuide, xs: torch.Tensor, ys: torch.Tensor, *,
                  n_classes: int | None, temperature: float, steps: int | None = None,
                  randomness: str = "different",
                  ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Adapt ``C`` posteriors at once on support sets ``xs`` [C, N, ...], ``ys`` [C, N].

    Returns the detached adapted parameters (each with a leading axis ``C``, names as in
    :class:`~models.priors.MetaParams`) and the losses before each step, [steps, C].
    """
    model = guide.model
    check_supported(model)
    net = model._modules["supernet"]
    if net.skip_zero or net.space.track_running_stats:
        raise ValueError("batched_adapt needs a SuperNet(skip_zero=False) with "
                         "track_running_stats=False (no data-dependent control flow)")
    if xs.ndim != 5 or ys.shape != xs.shape[:2]:
        raise ValueError(f"xs must be [C, N, channels, H, W] and ys [C, N], got "
                         f"{tuple(xs.shape)} and {tuple(ys.shape)}")
    steps = guide.inner_steps if steps is None else steps
    C, N = ys.shape
    names = [n for n in model.W.named_tensors()
             if not (n == "log_sigma" and guide.weight_posterior == "delta")]
    params = {n: p.detach().expand(C, *p.shape).clone()
              for n, p in model.W.named_tensors().items()}

    def loss_fn(trainable: dict[str, torch.Tensor], fixed: dict[str, torch.Tensor],
                x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return functional_loss(model, {**fixed, **trainable}, x, y, size=N,
                               n_classes=n_classes, temperature=temperature,
                               weight_posterior=guide.weight_posterior)

    step_fn = vmap(grad_and_value(loss_fn), randomness=randomness)
    adam = _functional_adam() if guide.inner_optimizer == "adam" else None
    losses = []
    for t in range(1, steps + 1):
        trainable = {n: params[n] for n in names}
        fixed = {n: p for n, p in params.items() if n not in trainable}
        grads, loss = step_fn(trainable, fixed, xs, ys)
        losses.append(loss.detach())
        for n in names:
            lr = guide._lr(n)
            params[n] = (adam(n, params[n], grads[n], lr, t) if adam
                         else params[n] - lr * grads[n]).detach()
    out = torch.stack(losses) if losses else xs.new_zeros(0, C)
    return params, out
