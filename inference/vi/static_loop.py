"""The first-order inner loop over static buffers, replayed as one CUDA graph per step.

An inner step of :class:`~pyro_base.inference.vi.guides.OptimizationEmbeddingGuide`
(``order="none"``) is a
fixed sequence of kernels: draw the noise, run the supernet with every op (``skip_zero`` off),
back-propagate, update the posterior parameters. Launching those kernels one by one from
Python costs more than running them at the DARTS batch size of 64 on a large GPU. Here the
step reads and writes only *static* tensors: the support batch, the posterior parameters
``(phi_t, psi_t)``, the Adam moments, the temperature and the bias corrections, so on CUDA it
is captured once into a :class:`torch.cuda.CUDAGraph` and each inner step is one
``graph.replay()``. Random draws inside a graph come from the default generator's Philox
stream, advanced on every replay, as PyTorch does for captured RNG.

With ``tasks=C`` the step is ``vmap(grad_and_value(loss), randomness="different")`` over ``C``
stacked posteriors: one launch sequence adapts the ``C`` tasks of a meta-step together. A
task's class count is a boolean mask over the supernet's outputs in a static buffer (the other
logits are ``-inf``), so one graph serves tasks of any class count.

Per step, with ``L_hat`` the functional negative ELBO (:func:`~pyro_base.inference.vi.elbo.
functional_loss`) and ``ok`` "every loss so far was finite"::

    loss_t, g_t = L_hat(phi_t, psi_t; batch_t), grad L_hat
    m_t = b1 m + (1 - b1) g_t,  v_t = b2 v + (1 - b2) g_t^2
    phi_{t+1} = phi_t - lr * (m_t / (1 - b1^t)) / sqrt(v_t / (1 - b2^t) + eps^2)   if ok
    phi_{t+1} = phi_t                                                             otherwise

which is the guide's functional Adam (or SGD) update, so with ``capture=False`` (any device)
the loop returns the guide's ``elbo_impl="functional"`` result on the same RNG state. A task
whose loss becomes non-finite keeps the parameters that loss was computed at, as the guide's
loop does when it stops early.

Usage::

    loop = StaticInnerLoop(guide, x_shape=x.shape[1:], size=N, batch=32, capture=x.is_cuda)
    params, losses = loop.run(model.W.named_tensors(), x, y, n_classes=5, temperature=0.5)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch.func import grad_and_value, vmap

from pyro_base.inference.vi.elbo import check_supported, functional_loss
from pyro_base.inference.vi.update import ADAM_BETAS
from pyro_base.models.relaxations import StraightThrough, check_temperature

log = logging.getLogger(__name__)



@contextlib.contextmanager
def _dense_supernet(model: torch.nn.Module) -> Iterator[None]:
    """Compute every op (no zero-skipping: that reads ``z`` on the host)."""
    net = model.network
    saved = net.skip_zero
    net.skip_zero = False
    try:
        yield
    finally:
        net.skip_zero = saved


def check_dense_ok(model: torch.nn.Module) -> None:
    """Refuse hard samples on a zero-skipping supernet: computing every op (as this loop must)
    would silently turn GDAS' estimator into the full straight-through one."""
    if isinstance(model.relaxation, StraightThrough) and model.network.skip_zero:
        raise ValueError("the static (graph / batched) inner loop computes every op, which "
                         "changes the straight-through estimator of a SuperNet(skip_zero=True) "
                         "(GDAS'); use elbo_impl='functional' without batch_tasks for it, or "
                         "build SuperNet(skip_zero=False) to mean the full estimator")


class StaticInnerLoop:
    """``T`` first-order inner steps of ``guide`` on fixed shapes, optionally CUDA-graphed.

    :param guide: an :class:`~pyro_base.inference.vi.guides.OptimizationEmbeddingGuide` (its
    optimizer,
        step sizes, batch size and weight posterior are used; its ``elbo_impl`` is not).
    :param x_shape: the shape of one input, ``(channels, H, W)``.
    :param size: the support-set size ``N`` of every task.
    :param batch: images per inner step (``min(guide.batch_size, N)``).
    :param tasks: ``None`` for one task, else ``C`` tasks adapted together (``vmap``).
    :param capture: record the step as a CUDA graph (needs CUDA tensors); ``False`` runs the
        same static-buffer step eagerly.
    :param randomness: ``vmap``'s: ``"different"`` noise per task, or ``"same"`` (the tasks
        share each draw; used to compare with the one-task loop).
    """

    def __init__(self, guide, *, x_shape: tuple[int, ...], size: int, batch: int,  # noqa: ANN001
                 tasks: int | None = None, capture: bool = False,
                 randomness: str = "different", device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        model = guide.model
        check_supported(model)
        check_dense_ok(model)
        if not 1 <= batch <= size:
            raise ValueError(f"batch must be in [1, size={size}], got {batch}")
        if tasks is not None and tasks < 1:
            raise ValueError(f"tasks must be >= 1 or None, got {tasks}")
        if tasks is not None and model.space.track_running_stats:
            raise ValueError("vmapped tasks need batch-statistics BatchNorm "
                             "(track_running_stats=False, the search default)")
        W = model.W.named_tensors()
        ref = next(iter(W.values()))
        device = torch.device(device) if device is not None else ref.device
        dtype = dtype or ref.dtype
        if capture and device.type != "cuda":
            raise ValueError(f"capture=True needs a CUDA device, got {device}")
        if capture and model.space.track_running_stats:
            raise ValueError("capture=True needs batch-statistics BatchNorm "
                             "(track_running_stats=False): the warm-up would move running stats")
        self.guide, self.model = guide, model
        self.size, self.batch, self.tasks = size, batch, tasks
        self.capture = capture
        lead = () if tasks is None else (tasks,)
        self.names = guide.update.moving(W)
        self.params = {n: torch.zeros(*lead, *p.shape, device=device, dtype=dtype)
                       for n, p in W.items()}
        self.update = guide.update
        self.adam = any(self.update.rule(n) == "adam" for n in self.names)
        self.m = {n: torch.zeros_like(self.params[n]) for n in self.names}
        self.v = {n: torch.zeros_like(self.params[n]) for n in self.names}
        self.x = torch.zeros(*lead, batch, *x_shape, device=device, dtype=dtype)
        self.y = torch.zeros(*lead, batch, device=device, dtype=torch.long)
        self.tau = torch.ones((), device=device, dtype=dtype)
        self.bc1 = torch.ones((), device=device, dtype=dtype)  # 1 - b1^t
        self.bc2 = torch.ones((), device=device, dtype=dtype)  # 1 - b2^t
        self.ok = torch.ones(lead, device=device, dtype=torch.bool)
        self.loss = torch.zeros(lead, device=device, dtype=dtype)
        self.mask = torch.ones(*lead, model.space.n_classes, device=device, dtype=torch.bool)
        # one task: plain autograd (torch.func's grad costs ~20% more per step on a CPU)
        self._grad_fn = (vmap(grad_and_value(self._loss), randomness=randomness)
                         if tasks is not None else self._autograd_grad_and_value)
        self._graph: torch.cuda.CUDAGraph | None = None

    # -- the step --------------------------------------------------------------------------
    def _loss(self, trainable: dict[str, torch.Tensor], fixed: dict[str, torch.Tensor],
              x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return functional_loss(self.model, {**fixed, **trainable}, x, y, size=self.size,
                               n_classes=None, temperature=self.tau,
                               weight_posterior=self.guide.weight_posterior, class_mask=mask)

    def _autograd_grad_and_value(self, trainable: dict[str, torch.Tensor],
                                 fixed: dict[str, torch.Tensor], x: torch.Tensor,
                                 y: torch.Tensor, mask: torch.Tensor,
                                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        leaves = {n: p.detach().requires_grad_(True) for n, p in trainable.items()}
        with torch.enable_grad():
            loss = self._loss(leaves, fixed, x, y, mask)
            grads = torch.autograd.grad(loss, list(leaves.values()))
        return dict(zip(leaves, grads, strict=True)), loss.detach()

    def _step(self) -> None:
        """One inner step, reading and writing only the static buffers."""
        trainable = {n: self.params[n] for n in self.names}
        fixed = {n: p for n, p in self.params.items() if n not in trainable}
        grads, loss = self._grad_fn(trainable, fixed, self.x, self.y, self.mask)
        self.loss.copy_(loss.detach())
        self.ok &= torch.isfinite(loss.detach())
        for n in self.names:
            p = self.params[n]
            new = self.update.step_(n, p, grads[n].detach(), self.m[n], self.v[n], self.bc1,
                                    self.bc2)
            keep = self.ok.reshape(*self.ok.shape, *([1] * (p.ndim - self.ok.ndim)))
            p.copy_(torch.where(keep, new, p))

    def _capture(self) -> None:
        """Warm up on a side stream, then record :meth:`_step` (buffers are reset by run).

        The warm-up draws random numbers: the generator's state is restored afterwards, so the
        first run draws what an eager loop from the same seed would."""
        device = self.x.device
        with torch.cuda.device(device):
            rng = torch.cuda.get_rng_state(device)
            try:
                stream = torch.cuda.Stream(device=device)
                stream.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(stream), _dense_supernet(self.model):
                    for _ in range(3):
                        self._step()
                torch.cuda.current_stream(device).wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=self._pool()), _dense_supernet(self.model):
                    self._step()
            finally:
                torch.cuda.set_rng_state(rng, device)
        self._graph = graph
        log.info("captured the inner step as a CUDA graph (tasks=%s, batch=%d)",
                 self.tasks, self.batch)

    def _pool(self) -> tuple:
        """The guide's graph memory pool, shared by all its loops' graphs on this device.

        Safe to share: a graph's outputs are copied into static buffers allocated outside any
        capture, so nothing in the pool outlives a replay, and replays never overlap."""
        pools = self.guide.graph_pools
        key = str(self.x.device)
        if key not in pools:
            pools[key] = torch.cuda.graph_pool_handle()
        return pools[key]

    # -- the loop --------------------------------------------------------------------------
    def run(self, start: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, *,
            n_classes: int | Sequence[int] | None, temperature: float,
            steps: int | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Adapt from ``start`` (W, or ``C`` stacked starts) on ``x`` [(C,) N, ...], ``y``.

        ``n_classes``: the task's class count (one per task with ``tasks=C``, or one for all);
        ``None`` uses every output of the supernet.

        Returns fresh copies of the adapted parameters and the losses before each step,
        ``[steps]`` or ``[steps, C]``; entries after a task's first non-finite loss are NaN.
        """
        check_temperature(temperature)
        lead = () if self.tasks is None else (self.tasks,)
        if tuple(y.shape) != (*lead, self.size) or tuple(x.shape) != (
                *lead, self.size, *self.x.shape[len(lead) + 1:]):
            raise ValueError(f"x and y must be {(*lead, self.size, *self.x.shape[len(lead)+1:])}"
                             f" and {(*lead, self.size)}, got {tuple(x.shape)} and "
                             f"{tuple(y.shape)}")
        if x.dtype != self.x.dtype or x.device != self.x.device or y.device != self.y.device:
            raise ValueError(f"x must be {self.x.dtype} and x, y on {self.x.device} (the "
                             f"model's), got {x.dtype} on {x.device}, y on {y.device}")
        steps = self.guide.inner_steps if steps is None else steps
        mask = self._class_mask(n_classes)
        if self.capture and self._graph is None and steps > 0:
            self._capture()  # its warm-up moves the buffers: they are (re)set below
        with torch.no_grad():
            self.mask.copy_(mask)
            self.tau.fill_(temperature)
            for n, p in self.params.items():
                p.copy_(start[n].detach().expand_as(p))
            for buf in (*self.m.values(), *self.v.values()):
                buf.zero_()
            self.ok.fill_(True)
        losses, failed = [], torch.zeros_like(self.ok)
        b1, b2 = self.guide.update.beta1, ADAM_BETAS[1]
        for t in range(1, steps + 1):
            self._load_batch(x, y)
            self.bc1.fill_(1 - b1**t)
            self.bc2.fill_(1 - b2**t)
            if self._graph is not None:
                self._graph.replay()
            else:
                with _dense_supernet(self.model):
                    self._step()
            # NaN after a task's first non-finite loss, as the guide's loop stops there
            losses.append(torch.where(failed, torch.nan, self.loss))
            failed = failed | ~self.ok
        out = torch.stack(losses) if losses else self.loss.new_zeros(0, *lead)
        return {n: p.clone() for n, p in self.params.items()}, out

    def _class_mask(self, n_classes: int | Sequence[int] | None) -> torch.Tensor:
        K = self.model.space.n_classes
        counts = [K if n_classes is None else n_classes] if not isinstance(
            n_classes, Sequence) else list(n_classes)
        if self.tasks is not None and len(counts) == 1:
            counts = counts * self.tasks
        if len(counts) != (1 if self.tasks is None else self.tasks) or not all(
                isinstance(n, int) and 2 <= n <= K for n in counts):
            raise ValueError(f"n_classes must be None or an int in [2, {K}] (one per task "
                             f"with tasks=C), got {n_classes!r}")
        mask = torch.arange(K) < torch.tensor(counts)[:, None]  # [tasks, K]
        return mask[0] if self.tasks is None else mask

    def _load_batch(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Copy this step's support minibatch into the static input buffers (the guide's draw:
        ``randperm(N)[:B]`` per task, or the whole support set when ``B == N``)."""
        if self.batch == self.size:
            self.x.copy_(x)
            self.y.copy_(y)
            return
        if self.tasks is None:
            idx = torch.randperm(self.size, device=x.device)[:self.batch]
            self.x.copy_(x[idx])
            self.y.copy_(y[idx])
            return
        for c in range(self.tasks):
            idx = torch.randperm(self.size, device=x.device)[:self.batch]
            self.x[c].copy_(x[c, idx])
            self.y[c].copy_(y[c, idx])
