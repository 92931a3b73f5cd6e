"""Meta-training ``W`` across tasks: Algorithm 1 of BASE (Reptile-style) and a MAML variant.

``mode="reptile"`` (Algorithm 1 of the poster, first order)::

    for each meta-step e:  sample C tasks; for each, phi_c^T, psi_c^T = guide.adapt(D_c)
        W <- W + lambda_e * mean_c([phi_c^T, psi_c^T] - W)

implemented as ``W.grad = W - mean_c(adapted_c)`` followed by ``meta_optimizer.step()``; with
``torch.optim.SGD(lr=lambda)`` this is exactly the update above. ``lambda_e`` decays linearly
from ``meta_lr`` to ``meta_lr * meta_lr_final`` over ``total_steps``.

``arch_decay = kappa > 0`` puts a Gaussian hyperprior ``alpha ~ N(0, 1 / kappa)`` on the
architecture logits of ``W``: the default optimizer's step on them becomes the MAP step
``alpha <- alpha + lambda_e * (mean_c(phi_c^T) - alpha - kappa * alpha)`` (SGD's
``weight_decay``). Without it the Reptile step on the logits is a random walk plus a drift
with positive feedback (the prior's favourite op gets the most weight training, so tasks favour
it more), which can drive edges onto one op; with it a logit settles where the tasks' mean pull
equals ``kappa * alpha``, so the prior keeps mass on ops that only some tasks use.

``arch_update="mixture"`` (Reptile; the default) replaces the step on the logits by the
empirical-Bayes (EM) update of a categorical prior (``arch_update="reptile"`` keeps Algorithm 1
to the letter): the prior's op probabilities move toward the *mean of the tasks'
adapted op probabilities*, ``log_softmax(alpha) <- log_softmax(alpha) + lambda_e *
(log mean_c softmax(phi_c^T) - log_softmax(alpha))``. The logit mean of Reptile is a product
of the tasks' posteriors (an op that one task dislikes is suppressed for all) and its noise is
a random walk that ends on one op; the mean of probabilities is a mixture whose noise stays
bounded (each step replaces the prior by an average of posteriors that started from it), so it
sharpens only where the tasks agree.

``weight_scale = s`` gives the weights' prior ``(mu, log sigma)`` the step ``s * lambda_e``
(the logits keep ``lambda_e``); ``weight_update="query"`` replaces the weights' delta
``W - psi_c^T`` by the gradient of the adapted posterior's per-datum negative ELBO on a batch
of the task's query set with respect to ``psi_c^T`` (a query step from the adapted point).

``mode="maml"`` differentiates the per-datum negative query-set ELBO of each adapted posterior
through the unrolled inner loop (``inner_grad="first"``: ``d phi_T / d W = I``; ``"second"``:
full second order) and averages over tasks.

Tasks are a pure function of ``(seed, step, c)``: task ``c`` of step ``e`` is
``dist.sample("train", default_rng([seed, e, c]))`` and its inner loop is seeded from the same
triple, so results do not depend on how tasks are spread over ``torch.distributed`` ranks
(rank ``r`` of ``R`` takes tasks ``c = r, r + R, ...``; the deltas or gradients are summed with
one all-reduce).

``batch_tasks=True`` (Reptile, ``guide.elbo_impl`` ``"functional"`` or ``"graph"``) adapts a
rank's tasks of equal support shape together, one ``vmap``-ed inner loop
(:class:`~pyro_base.inference.vi.static_loop.StaticInnerLoop`, CUDA-graphed under ``"graph"`` on a
GPU)
seeded from its first task's triple: the same distribution of updates with fewer, larger
kernel launches, but no longer independent of the rank layout (the noise differs).

``workers=N > 1`` (Reptile on a CPU, without ``batch_tasks``, one process per run: ignored
under ``torch.distributed``, whose ranks are processes already) adapts a step's tasks in ``N``
worker processes of one torch thread each
(:class:`~pyro_base.inference.vi.task_pool.TaskPool`, started at the first step and stopped
when :meth:`MetaSVI.run` returns, by :meth:`MetaSVI.close`, or on an error in the step): the
updates, metrics and RNG state equal those of one process with one torch thread, float for
float; with 4 tasks per step, 2 workers take about half the time on 2 cores.

Usage::

    svi = MetaSVI(model, guide, tasks_per_step=4, meta_lr=1.0, total_steps=100)
    result = svi.run(task_distribution, num_steps=100)
    result.params["alpha_normal"], result.losses
    svi = MetaSVI(model, guide, total_steps=100, workers=2)   # the same W on 2 cores, faster
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist
from tqdm.auto import tqdm

from pyro_base import defaults
from pyro_base.inference.vi.diagnostics import parameter_groups, prior_summary, step_agreement
from pyro_base.inference.vi.guides import ORDERS, OptimizationEmbeddingGuide
from pyro_base.inference.vi.meta_common import MetaSVIResult, NonFiniteLossError, head_slices
from pyro_base.inference.vi.meta_common import task_seed as task_seed
from pyro_base.inference.vi.meta_common import zero_head as zero_head
from pyro_base.inference.vi.static_loop import check_dense_ok
from pyro_base.inference.vi.task_pool import TaskPool
from pyro_base.inference.vi.task_updates import (
    StepContext,
    batched_updates,
    mixture_delta,
    reduce_tasks,
    task_update,
)
from pyro_base.models.base_model import BASEModel
from pyro_base.models.temperature import (
    ConstantTemperature,
    ExponentialTemperature,
    TemperatureSchedule,
)
from pyro_base.tasks.base import Task, TaskDistribution

log = logging.getLogger(__name__)

MODES = ("reptile", "maml")
ARCH_UPDATES = ("reptile", "mixture")
WEIGHT_UPDATES = ("reptile", "query")
NAN_POLICIES = ("stop", "skip")


class MetaSVI:
    """Stochastic meta-training of ``model.W`` with an optimization-embedding guide.

    :param meta_optimizer: a ``torch.optim.Optimizer`` over ``model.W.parameters()``; default
        ``SGD(lr=meta_lr)``, which makes the Reptile update exactly Algorithm 1.
    :param temperature: a float or a schedule ``step -> tau``; default (``None``): the measured
        ``ExponentialTemperature`` 1.0 -> 0.5 over ``total_steps`` (1.0 when that is ``None``).
    :param log_query: in ``reptile`` mode, also log each adapted posterior's per-datum
        negative ELBO on the first ``guide.batch_size`` query points (monitoring only).
    :param nan_policy: ``"stop"`` raises on the first non-finite task loss; ``"skip"`` drops
        that task's contribution with a warning and stops after ``max_bad_steps`` consecutive
        steps in which every task was bad.
    :param meta_head: meta-learn the classifier head's location (the ``classifier.*`` slice
        of ``mu``). ``False`` leaves it where it is (:func:`zero_head` puts it at zero): where
        class labels are drawn per task the head's meta-update is noise, and a zero head
        starts every task from equal logits.
    :param batch_tasks: adapt the step's tasks together (Reptile with a Pyro-free guide);
        see the module docstring.
    :param arch_decay: ``kappa``, the precision of the Gaussian hyperprior on the architecture
        logits (see the module docstring); used by the default optimizer only.
    :param weight_scale: the meta step of the weights' prior ``(mu, log sigma)`` as a fraction
        of ``meta_lr`` (the architecture logits keep ``meta_lr``); used by the default
        optimizer only.
    :param weight_update: the weights' meta-step in Reptile mode: ``"reptile"`` (default), the
        deltas ``W - psi_c^T``, or ``"query"``, the gradient of each adapted posterior's
        negative ELBO on a batch of its task's query set with respect to its ``(mu, log
        sigma)``, the direction one more step on query data would take (scale it with
        ``weight_scale``; ``mode="maml"`` adds the KL's direct dependence on ``W``).
    :param arch_update: the meta-step of the architecture logits in Reptile mode:
        ``"mixture"`` (default), toward the mean of the adapted op probabilities, or
        ``"reptile"``, toward the mean of the adapted logits (see the module docstring). MAML
        mode takes the query gradient for every parameter and ignores it, as Reptile mode
        ignores ``inner_grad``.
    :param workers: adapt a step's tasks in this many processes (Reptile on a CPU, without
        ``batch_tasks``, not under ``torch.distributed``; see the module docstring); 1: in this
        process.

    Besides the loss, a step's metrics say whether the meta-update has signal
    (:mod:`pyro_base.inference.vi.diagnostics`): ``agreement`` ({group: {cos, ratio, noise_ratio}}
    of the good tasks' contributions: Reptile deltas ``W - phi_c^T``, MAML query gradients;
    ``None`` with fewer than 2 good tasks), ``arch_entropy_per_cell`` and ``sigma`` (mean, std, min,
    max of ``exp(log_sigma)``), all of the ``W`` the step's tasks started from. Under
    ``torch.distributed`` ``agreement`` uses this rank's tasks only (no extra collective).
    """

    def __init__(self, model: BASEModel, guide: OptimizationEmbeddingGuide, *,
                 meta_optimizer: torch.optim.Optimizer | None = None,
                 meta_lr: float = defaults.META_LR, meta_lr_final: float = defaults.META_LR_FINAL,
                 total_steps: int | None = None, tasks_per_step: int = defaults.TASKS_PER_STEP,
                 mode: str = "reptile", inner_grad: str = "first",
                 temperature: float | TemperatureSchedule | None = None, nan_policy: str = "stop",
                 max_bad_steps: int = 3, seed: int = 0, log_query: bool = True,
                 batch_tasks: bool = False, meta_head: bool = True,
                 arch_decay: float = defaults.ARCH_DECAY,
                 arch_update: str = defaults.ARCH_UPDATE,
                 weight_scale: float = defaults.WEIGHT_SCALE,
                 weight_update: str = defaults.WEIGHT_UPDATE, workers: int = 1) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if arch_update not in ARCH_UPDATES:
            raise ValueError(f"arch_update must be one of {ARCH_UPDATES}, got {arch_update!r}")
        if weight_update not in WEIGHT_UPDATES:
            raise ValueError(f"weight_update must be one of {WEIGHT_UPDATES}, got "
                             f"{weight_update!r}")
        if inner_grad not in ORDERS[1:]:
            raise ValueError(f"inner_grad must be 'first' or 'second', got {inner_grad!r}")
        if tasks_per_step < 1:
            raise ValueError(f"tasks_per_step must be >= 1, got {tasks_per_step}")
        if not (math.isfinite(meta_lr) and meta_lr > 0):
            raise ValueError(f"meta_lr must be a finite number > 0, got {meta_lr!r}")
        if not 0 <= meta_lr_final <= 1:
            raise ValueError(f"meta_lr_final must be in [0, 1], got {meta_lr_final!r}")
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
        if not (math.isfinite(arch_decay) and arch_decay >= 0):
            raise ValueError(f"arch_decay must be a finite number >= 0, got {arch_decay!r}")
        if not (math.isfinite(weight_scale) and weight_scale > 0):
            raise ValueError(f"weight_scale must be a finite number > 0, got {weight_scale!r}")
        if max_bad_steps < 1:
            raise ValueError(f"max_bad_steps must be >= 1, got {max_bad_steps}")
        if batch_tasks and (mode != "reptile" or guide.elbo_impl == "pyro"):
            raise ValueError(f"batch_tasks needs mode='reptile' and a guide with elbo_impl "
                             f"'functional' or 'graph' (Pyro's sampling cannot be vmapped), "
                             f"got mode={mode!r}, elbo_impl={guide.elbo_impl!r}")
        if batch_tasks:
            check_dense_ok(model)
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if workers > 1 and (mode != "reptile" or batch_tasks):
            raise ValueError(f"workers > 1 adapts Reptile steps task by task: it needs "
                             f"mode='reptile' without batch_tasks, got mode={mode!r}, "
                             f"batch_tasks={batch_tasks}")
        self.workers = workers
        self._pool: TaskPool | None = None
        self.batch_tasks = batch_tasks
        self.meta_head = meta_head
        self._head = head_slices(model) if not meta_head else []
        self.model = model
        self.guide = guide
        self.meta_lr = meta_lr
        self.meta_lr_final = meta_lr_final
        self.total_steps = total_steps
        self.arch_decay = arch_decay
        self.arch_update = arch_update if mode == "reptile" else "reptile"
        self.weight_scale = weight_scale
        self.weight_update = weight_update if mode == "reptile" else "reptile"
        self.optimizer = meta_optimizer or self._default_optimizer(model, meta_lr, arch_decay,
                                                                   weight_scale)
        self.tasks_per_step = tasks_per_step
        self.mode = mode
        self.inner_grad = inner_grad
        if temperature is None:  # the measured default: annealed over the run when its length
            # is known, else the start value
            temperature = (ExponentialTemperature(start=defaults.TAU_START, end=defaults.TAU_END,
                                                  steps=total_steps) if total_steps
                           else defaults.TAU_START)
        self.temperature = (ConstantTemperature(value=temperature)
                            if isinstance(temperature, int | float) else temperature)
        self.nan_policy = nan_policy
        self.max_bad_steps = max_bad_steps
        self.seed = seed
        self.log_query = log_query
        self.step_count = 0
        self.losses: list[float] = []
        self.n_skipped = 0
        self._bad_streak = 0
        self._last_finite: float | None = None
        self._groups = parameter_groups(model.spec, model.W.cells)
        self._deltas: list[dict[str, torch.Tensor]] = []  # this step's good tasks only

    @staticmethod
    def _default_optimizer(model: BASEModel, meta_lr: float, arch_decay: float,
                           weight_scale: float = 1.0) -> torch.optim.Optimizer:
        """``SGD(lr=meta_lr)``; with ``arch_decay > 0`` the logits get ``weight_decay``, with
        ``weight_scale != 1`` the weights' prior gets ``lr = weight_scale * meta_lr``."""
        if arch_decay == 0 and weight_scale == 1:  # one group, as older checkpoints have
            return torch.optim.SGD(model.W.parameters(), lr=meta_lr)
        W = model.W.named_tensors()
        arch = [p for n, p in W.items() if n.startswith("alpha_")]
        rest = [p for n, p in W.items() if not n.startswith("alpha_")]
        return torch.optim.SGD([{"params": rest, "lr": weight_scale * meta_lr},
                                {"params": arch, "weight_decay": arch_decay}], lr=meta_lr)

    # -- tasks -----------------------------------------------------------------------------
    @staticmethod
    def _rank_world() -> tuple[int, int]:
        if tdist.is_available() and tdist.is_initialized():
            return tdist.get_rank(), tdist.get_world_size()
        return 0, 1

    def sample_tasks(self, distribution: TaskDistribution, step: int) -> list[Task]:
        """All ``tasks_per_step`` tasks of ``step`` (every rank builds the same list)."""
        return [distribution.sample("train", np.random.default_rng([self.seed, step, c]))
                for c in range(self.tasks_per_step)]

    def lr_at(self, step: int) -> float:
        if not self.total_steps:
            return self.meta_lr
        frac = min(step / self.total_steps, 1.0)
        return self.meta_lr * (1.0 - (1.0 - self.meta_lr_final) * frac)

    # -- one meta-step ---------------------------------------------------------------------
    def step(self, tasks: list[Task]) -> dict[str, Any]:
        """One meta-update from ``tasks``; returns the step's metrics."""
        if not tasks:
            raise ValueError("step() needs at least one task")
        step = self.step_count
        tau = self.temperature(step)
        self._set_lr(step)
        rank, world = self._rank_world()
        W = self.model.W.named_tensors()
        device = next(iter(W.values())).device
        acc = {n: torch.zeros_like(p) for n, p in W.items()}
        self.optimizer.zero_grad(set_to_none=True)
        self._deltas = []
        mine = [(c, task.to(device)) for c, task in enumerate(tasks) if c % world == rank]
        ctx = StepContext(model=self.model, guide=self.guide, mode=self.mode,
                          inner_grad=self.inner_grad, seed=self.seed, log_query=self.log_query,
                          step=step, tau=tau, acc=acc, deltas=self._deltas, on_bad=self._bad,
                          arch_update=self.arch_update, weight_update=self.weight_update)
        per_task: list[dict[str, Any]]
        if self.batch_tasks:
            per_task = batched_updates(ctx, mine)
        elif self.workers > 1 and len(mine) > 1 and world == 1:
            if self._pool is None:
                self._pool = TaskPool(self.guide, workers=min(self.workers, len(mine)))
            try:
                per_task = self._pool.updates(ctx, mine)
            except BaseException:  # a broken or interrupted pool is not reused
                self.close()
                raise
        else:
            per_task = [task_update(ctx, task, c, len(tasks)) for c, task in mine]
        good, loss, flat = reduce_tasks(per_task, acc, mode=self.mode, device=device,
                                        world=world)
        metrics = {"step": step, "loss": loss, "temperature": tau, "meta_lr": self.lr_at(step),
                   **prior_summary(self.model.W, self.model.space), "tasks": per_task,
                   "n_good": good, "n_tasks": len(tasks), "n_skipped_total": self.n_skipped}
        metrics["agreement"] = step_agreement(self._deltas, self._groups)
        self._deltas = []
        if good == 0:
            self._no_good_task(step, per_task)
            self.step_count += 1
            return metrics
        self._bad_streak = 0
        scale = len(tasks) / good if self.mode == "maml" else 1.0 / good
        if self.arch_update == "mixture":
            flat = self._mixture(W, flat, good)
        self._apply(W, flat, scale)
        self.step_count += 1
        self.losses.append(metrics["loss"])
        self._last_finite = metrics["loss"]
        return metrics

    def _set_lr(self, step: int) -> None:
        """Scale every parameter group's own learning rate by the schedule at ``step``."""
        for group in self.optimizer.param_groups:
            base = group.setdefault("initial_lr", group["lr"])  # the optimizer's own lr
            group["lr"] = base * self.lr_at(step) / self.meta_lr

    def _no_good_task(self, step: int, per_task: list[dict[str, Any]]) -> None:
        """A step without one good task: raise after ``max_bad_steps`` in a row."""
        self._bad_streak += 1
        if self._bad_streak >= self.max_bad_steps:
            raise NonFiniteLossError(
                f"{self._bad_streak} consecutive meta-steps with only non-finite task "
                f"losses, ending at step {step} (tasks {[r['task'] for r in per_task]}); "
                f"last finite loss {self._last_finite}")

    @staticmethod
    def _mixture(W: dict[str, torch.Tensor], flat: torch.Tensor, good: int) -> torch.Tensor:
        """``flat`` with each logit block's summed probability changes replaced by
        :func:`mixture_delta` (times ``good``, as the other blocks' summed deltas)."""
        flat, offset = flat.clone(), 0
        for n, p in W.items():
            k = p.numel()
            if n.startswith("alpha_"):
                flat[offset:offset + k] = mixture_delta(flat[offset:offset + k], good)
            offset += k
        return flat

    def _apply(self, W: dict[str, torch.Tensor], flat: torch.Tensor, scale: float) -> None:
        """Set ``W``'s gradients to ``scale * flat`` (the head's zero unless meta-learned) and
        take the meta-optimizer's step."""
        offset = 0
        for p in W.values():  # the nn.Parameters themselves
            k = p.numel()
            p.grad = (flat[offset:offset + k].view_as(p) * scale).to(p.dtype)
            offset += k
        for sl in self._head:  # a head that is not meta-learned stays where it is
            W["mu"].grad[sl] = 0.0
        self.optimizer.step()

    def _bad(self, step: int, task: Task, losses: list[float]) -> None:
        msg = (f"non-finite loss at meta-step {step} on task {task.name!r} (inner losses "
               f"{losses}); last finite meta-loss {self._last_finite}")
        if self.nan_policy == "stop":
            raise NonFiniteLossError(msg)
        self.n_skipped += 1
        warnings.warn(msg + "; skipping this task's contribution", RuntimeWarning, stacklevel=3)

    # -- the loop ----------------------------------------------------------------------------
    def run(self, distribution: TaskDistribution, num_steps: int, *,
            callback: Callable[[MetaSVI, dict[str, Any]], None] | None = None,
            progress: bool = True) -> MetaSVIResult:
        """Take ``num_steps`` more meta-steps (as Pyro's and NumPyro's loops do: two calls of
        30 steps are 60 steps); ``step_count`` counts every step taken, resumed ones too."""
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        rank, _ = self._rank_world()
        all_metrics = []
        end = self.step_count + num_steps
        with tqdm(total=end, initial=self.step_count, disable=not progress or rank != 0,
                  desc="meta-svi", dynamic_ncols=True) as bar, contextlib.closing(self):
            while self.step_count < end:
                metrics = self.step(self.sample_tasks(distribution, self.step_count))
                all_metrics.append(metrics)
                recent = [v for v in self.losses[-10:] if math.isfinite(v)]
                bar.set_postfix(loss=f"{np.mean(recent):.4f}" if recent else "nan",
                                tau=f"{metrics['temperature']:.2f}")
                bar.update(1)
                if callback is not None:
                    callback(self, metrics)
        return MetaSVIResult(params={n: p.detach().clone() for n, p in
                                     self.model.W.named_tensors().items()},
                             state=self.state_dict(), losses=list(self.losses),
                             metrics=all_metrics)

    def close(self) -> None:
        """Stop the worker processes of ``workers > 1`` (the next step starts new ones)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def state_dict(self) -> dict[str, Any]:
        return {"W": self.model.W.state_dict(), "optimizer": self.optimizer.state_dict(),
                "step": self.step_count, "losses": list(self.losses),
                "n_skipped": self.n_skipped, "bad_streak": self._bad_streak}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.W.load_state_dict(state["W"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count = int(state["step"])
        self.losses = [float(v) for v in state["losses"]]
        self.n_skipped = int(state.get("n_skipped", 0))
        self._bad_streak = int(state.get("bad_streak", 0))
        self._last_finite = self.losses[-1] if self.losses else None
