"""A powered, paired held-out evaluation of a finished meta-training run.

For ``tasks_per_family`` test-split tasks of every family of the run's task source (task
``j`` of a family is the source's task ``(family, "test", j)``: the same tasks whatever
``seed``), each *arm* (a starting ``W``) is adapted once by the guide's inner loop up to
``max(steps)``, and the query accuracy of the posterior predictive is read after every step
count in ``steps`` (``0``: no adaptation). The arms:

* ``meta``: the meta-trained ``W`` of ``checkpoint.pt``, its architecture prior sharpened by
  the run's ``adapt_sharpness`` (or ``sharpness``), as every adaptation from a run is;
* ``untrained``: ``W_0``, the ``W`` the run started from (rebuilt from its config and seed);
* ``meta_weights_uniform_arch``: the meta-trained ``mu, sigma`` with ``alpha`` reset to
  ``W_0``'s uniform logits, which separates the weights' contribution from the architecture's;
* ``meta_arch_untrained_weights`` (asked for by name; not among :data:`DEFAULT_ARMS`): the
  meta-trained ``alpha`` with ``W_0``'s ``mu, sigma``, the architecture prior's contribution
  alone, which completes the 2 x 2 of weights and architecture;
* ``select`` (asked for by name): per task, the one of the starts ``select_from`` (names
  of :data:`~pyro_base.inference.run.factory.TRANSFERS`, each the start of its arm of
  :data:`TRANSFER_ARMS`: ``all`` of ``meta``, ``none`` of ``untrained``, ``architecture`` of
  ``meta_arch_untrained_weights``; ``components``: one start per family component of the
  run's architecture refit, named ``architecture:<family>``, with ``W_0``'s weights, evaluated
  only as the select arm's choice; default ``all`` and ``architecture``, as ``adapt``'s)
  that scores higher on a held-out quarter of the task's own support set after
  ``select_at`` steps (default: the run's ``adapt_steps``, the budget a new task is adapted
  for), each adapted on the other three quarters
  (:func:`~pyro_base.inference.run.selection.select_start`, as
  ``pyro-base adapt --transfer select --select-from ...`` does for its ``--steps``); the
  chosen start is then adapted on the whole support set with the seeds its arm uses (its
  arm's numbers are read where that arm is evaluated too), and its query accuracy at every
  step count is the select arm's curve. The choice costs one adaptation of ``select_at``
  steps on 3/4 of the support set per candidate and task; it maximises ``select_criterion``
  (held-out ``accuracy`` or ``loglik``); the record keeps the held-out scores and the choice
  (``selection``, by arm name), and ``adapt_seconds["select"]`` the choice's seconds (plus
  the chosen start's adaptation where the select arm ran it). ``select_at="each"`` chooses
  again at every step count (the curve of "choose for a budget of ``k`` steps, adapt ``k``
  steps"), which adapts the candidates to ``max(steps)`` and needs their arms; both agree at
  the budget's step count.
* ``ensemble`` (asked for by name): the default of ``pyro-base adapt``, the equally weighted
  mixture of the posteriors of the starts ``ensemble_from`` (named as ``select_from``'s;
  default ``all``, ``architecture`` and ``none``), each adapted on the whole support set with
  the seeds of its own arm (an evaluated arm's adaptation serves as its member, and so does
  the start the select arm chose once and adapted); its accuracy after ``k`` steps is that
  of the members' averaged posterior predictive, its top ops those of their averaged op
  probabilities (:mod:`~pyro_base.inference.run.ensemble`). One adaptation per member that
  is not adapted already.

The arms are paired: for one task every arm sees the same support and query sets, the same
inner-loop seed and the same predictive seed, so per-task differences cancel the task and the
noise. Per family, step count and arm the summary holds the mean accuracy and, for the gains
(``meta-untrained``, ``meta_weights_uniform_arch-untrained``,
``meta-meta_weights_uniform_arch``, ``meta_arch_untrained_weights-untrained``,
``select-untrained``, ``select-meta``), the mean
per-task difference, both with a 95% percentile
bootstrap interval over tasks. Each task also records, per arm and cell type, the op with the
largest edge-averaged posterior probability (``none`` excluded) after ``max(steps)`` steps;
``match_fraction`` is the share of tasks whose ``meta`` normal cell picks the family's
designed op (:data:`PREFERRED`; ``None`` for families without one). With
``support_accuracy=True`` each record also holds, per arm, the posterior predictive's accuracy
on the task's own support set after each step count (``support_accuracy``; its draws are
seeded apart, so the query numbers do not change), and the summary its mean per arm: a start
that fits the support set fast while its query accuracy stays low has transferred features
that memorise rather than generalise.

Cost: one (task, arm) at the ``cpu`` preset with the default steps took 18 s on one CPU core
(14 s for the 80 inner steps, 4 s for the six predictive evaluations), so the default
5 families x 20 tasks x 3 arms is about 90 core-minutes; lower ``tasks_per_family`` or
``arms`` to fit, or spread the (family, task) units over ``workers`` processes (one torch
thread each, "spawn" start), which divides the wall time by about ``workers`` up to the number
of cores. Every unit sets its own seeds, so accuracies, top ops and summary equal a single
process's (with one torch thread) float for float, whatever the number of workers.

Usage::

    result = evaluate_run("runs/x", tasks_per_family=20, steps=(0, 5, 10, 20, 40, 80),
                          workers=4)
    print(format_summary(result))      # also in runs/x/evaluation/evaluation.json, curves.png
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pyro_base.inference.evaluate.pooled import restrict, restrict_selection
from pyro_base.inference.evaluate.summary import (  # noqa: F401  (re-exported)
    ARMS,
    DEFAULT_ARMS,
    EACH,
    ENSEMBLE,
    ENSEMBLE_FROM,
    GAINS,
    PREFERRED,
    SELECT,
    SELECT_CRITERION,
    SELECT_FROM,
    TRANSFER_ARMS,
    EvaluationResult,
    bootstrap_interval,
    format_summary,
    summarize,
)
from pyro_base.inference.evaluate.workers import evaluate_parallel
from pyro_base.inference.report.plots import plot_adaptation_curves
from pyro_base.inference.run.factory import (
    build_guide,
    build_model,
    build_space,
    build_tasks,
    load_trained,
    transfer_state,
)
from pyro_base.inference.run.run_dir import load_run
from pyro_base.inference.run.runlog import CHECKPOINT, CONFIG, RunDir
from pyro_base.inference.run.selection import (
    COMPONENTS,
    CRITERIA,
    check_select_from,
    checkpoint_components,
    select_start,
    selection_starts,
)
from pyro_base.inference.vi.adapt import predictive_probs
from pyro_base.inference.vi.elbo import check_supported
from pyro_base.inference.vi.guides import ELBO_IMPLS, AdaptedPosterior
from pyro_base.tasks.base import Task, TaskDistribution
from pyro_base.training import check_device, resolve_device

log = logging.getLogger(__name__)

FOLDER, JSON_FILE, CURVES_FILE = "evaluation", "evaluation.json", "curves.png"


SUPPORT_SLOT = 1_000_000  # pair_seed slot of the support-set predictive: SUPPORT_SLOT + k
SELECT_SLOT = 2_000_000  # pair_seed slot of the choice of start (arm "select")


def pair_seed(seed: int, family_index: int, task_index: int, slot: int) -> int:
    """The torch seed every arm uses on one task: slot 0 for the inner loop, ``1 + k`` for the
    predictive draws after ``k`` steps (``SUPPORT_SLOT + k`` on the support set)."""
    return int(np.random.default_rng([seed, family_index, task_index, slot, 11]).integers(2**62))


def top_ops(post: AdaptedPosterior | dict[str, torch.Tensor], ops: Sequence[str],
            ) -> dict[str, str]:
    """Per cell type, the op (``none`` excluded) of largest mean probability over edges, of a
    posterior or of its op probabilities (cell type -> ``[E, K]``)."""
    probs = post if isinstance(post, dict) else post.op_probs()
    keep = [i for i, op in enumerate(ops) if op != "none"]
    return {cell: ops[keep[int(p.mean(0)[keep].argmax())]] for cell, p in probs.items()}


def _check_settings(tasks_per_family: int, steps: Sequence[int], arms: Sequence[str],
                    device: str, seed: int, n_boot: int, elbo_impl: str | None,
                    workers: int = 1, select_from: Sequence[str] = SELECT_FROM,
                    select_criterion: str = SELECT_CRITERION,
                    select_at: int | str | None = None,
                    ensemble_from: Sequence[str] = ENSEMBLE_FROM) -> None:
    def is_int(v: Any) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    if not is_int(tasks_per_family) or tasks_per_family < 1:
        raise ValueError(f"tasks_per_family must be an int >= 1, got {tasks_per_family!r}")
    if (isinstance(steps, str) or not steps or not all(is_int(s) and s >= 0 for s in steps)
            or len(set(steps)) != len(steps)):
        raise ValueError(f"steps must be distinct ints >= 0, got {steps!r}")
    if isinstance(arms, str) or not arms or len(set(arms)) != len(arms) or any(
            a not in ARMS for a in arms):
        raise ValueError(f"arms must be distinct names from {ARMS}, got {arms!r}")
    check_select_from(select_from)  # adapt's rule: a ConfigError (a ValueError) names it
    check_select_from(ensemble_from, flag="ensemble_from (--ensemble-from)")
    if SELECT in arms and COMPONENTS in select_from and select_at == EACH:
        raise ValueError(f"select_from {COMPONENTS!r} has no arms of its own to choose between "
                         f"at each step count: choose once (select_at an int, or None)")
    if select_criterion not in CRITERIA:
        raise ValueError(f"select_criterion must be one of {CRITERIA}, got "
                         f"{select_criterion!r}")
    if select_at is not None and select_at != EACH and (not is_int(select_at)
                                                         or select_at < 0):
        raise ValueError(f"select_at must be None (the run's adapt_steps), {EACH!r} or an int "
                         f">= 0, got {select_at!r}")
    need = [TRANSFER_ARMS[n] for n in select_from if n != COMPONENTS]
    if SELECT in arms and select_at == EACH and not set(need) <= set(arms):
        raise ValueError(f"the {SELECT!r} arm chooses at each step count between {need} "
                         f"(select_from {list(select_from)}): ask for them with it, got "
                         f"{list(arms)!r}")
    check_device(device)
    if not is_int(seed) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    if not is_int(n_boot) or n_boot < 1:
        raise ValueError(f"n_boot must be an int >= 1, got {n_boot!r}")
    if elbo_impl is not None and elbo_impl not in ELBO_IMPLS:
        raise ValueError(f"elbo_impl must be None or one of {ELBO_IMPLS}, got {elbo_impl!r}")
    if not is_int(workers) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")


def family_tasks(source: TaskDistribution, n: int) -> dict[str, list[Task]]:
    """``n`` test tasks per family: ``(family, "test", j)`` for ``j < n`` where the source
    has families (procedural; each family once, in first-listed order), else its first ``n``
    test tasks grouped by family."""
    families = getattr(source, "families", None)
    if families is not None and hasattr(source, "task"):
        return {f: [source.task(f, j, "test") for j in range(n)] for f in dict.fromkeys(families)}
    grouped: dict[str, list[Task]] = {}
    for task in source.tasks("test", n):
        grouped.setdefault(task.family, []).append(task)
    return grouped


def _arm_states(cfg: Any, meta: dict[str, torch.Tensor], device: torch.device,
                ) -> dict[str, dict[str, torch.Tensor]]:
    untrained = build_model(cfg, build_space(cfg), device=device).W.state_dict()
    return {"meta": meta, "untrained": untrained,
            "meta_weights_uniform_arch": transfer_state(meta, untrained, transfer="weights"),
            "meta_arch_untrained_weights": transfer_state(meta, untrained,
                                                          transfer="architecture")}


def _adapt_arm(model: Any, guide: Any, state: dict[str, torch.Tensor], task: Task, fi: int,
               ti: int, *, steps: Sequence[int], seed: int, cfg: Any,
               support_accuracy: bool, keep_probs: bool = False) -> dict[str, Any]:
    """One start adapted to one task with the task's paired seeds: the query accuracy (and
    support accuracy) after each of ``steps``, the top ops after the last, the seconds (with
    ``keep_probs``, also the predictive probabilities behind each accuracy, ``"probs"``, and
    the op probabilities after the last step, ``"op_probs"``, for an ensemble arm)."""
    (xs, ys), (xq, yq) = task.support, task.query
    model.W.load_state_dict(state)
    torch.manual_seed(pair_seed(seed, fi, ti, 0))
    start = time.perf_counter()
    path, _ = guide.adapt_path(xs, ys, n_classes=task.n_classes,
                               temperature=cfg.adapt_temperature, steps=steps)
    seconds = time.perf_counter() - start
    accuracy: list[float] = []
    fit: list[float] = []
    kept: dict[str, list[torch.Tensor]] = {"accuracy": [], "support_accuracy": []}
    for k in steps:
        reads = [(1 + k, xq, yq, accuracy, "accuracy")]
        if support_accuracy:
            reads.append((SUPPORT_SLOT + k, xs, ys, fit, "support_accuracy"))
        for slot, x, y, out, key in reads:
            torch.manual_seed(pair_seed(seed, fi, ti, slot))
            probs = predictive_probs(model, path[k], x, n_classes=task.n_classes,
                                     temperature=cfg.adapt_temperature,
                                     num_samples=cfg.num_samples)
            out.append(float((probs.argmax(-1) == y).float().mean()))
            if keep_probs:
                kept[key].append(probs)
    last = path[max(steps)]
    return {"accuracy": accuracy, "top_op": top_ops(last, model.space.ops),
            "adapt_seconds": seconds, **({"support_accuracy": fit} if support_accuracy else {}),
            **({"probs": kept, "op_probs": last.op_probs()} if keep_probs else {})}


def _ensemble_arm(members: dict[str, dict[str, Any]], task: Task, ops: Sequence[str],
                  keys: Sequence[str]) -> dict[str, Any]:
    """The ensemble arm from its members' :func:`_adapt_arm` results (with ``keep_probs``):
    the accuracy of the averaged predictive after each step count, the top ops of the averaged
    op probabilities, the members' seconds summed."""
    ys, yq = task.support[1], task.query[1]
    got: dict[str, Any] = {}
    for key, y in (("accuracy", yq), ("support_accuracy", ys)):
        if key in keys:
            per_step = zip(*(m["probs"][key] for m in members.values()), strict=True)
            got[key] = [float((torch.stack(p).mean(0).argmax(-1) == y).float().mean())
                        for p in per_step]
    cells = next(iter(members.values()))["op_probs"]
    got["top_op"] = top_ops({c: torch.stack([m["op_probs"][c] for m in members.values()])
                             .mean(0) for c in cells}, ops)
    got["adapt_seconds"] = sum(m["adapt_seconds"] for m in members.values())
    return got


def _evaluate_task(model: Any, guide: Any, states: dict[str, dict[str, torch.Tensor]],
                   task: Task, fi: int, ti: int, *, steps: Sequence[int], seed: int,
                   cfg: Any, support_accuracy: bool = False,
                   select: Sequence[str] | None = None,
                   select_criterion: str = SELECT_CRITERION, select_at: int | str = EACH,
                   starts: dict[str, dict[str, torch.Tensor]] | None = None,
                   known: dict[str, Any] | None = None,
                   ensemble: dict[str, dict[str, torch.Tensor]] | None = None,
                   ) -> dict[str, Any]:
    """Every arm on one task: accuracies at ``steps``, top ops after the last step (and, with
    ``select``, arm names, the choice between them after ``select_at`` steps, or per step
    count). The candidates' states are taken from ``states``, else ``starts``; a start
    chosen once whose arm is not evaluated is adapted for the select arm alone, with the
    seeds its arm would use. The arms (and the choice) of ``known``, an earlier record of
    this task at these steps, are taken from it. ``ensemble`` (member name -> start, members
    named by their arms where they have one) adds the ensemble arm: each member adapted with
    the seeds its arm uses (an evaluated arm's own adaptation serves), the predictives
    averaged."""
    known = known or {}
    task = task.to(model.W.mu.device)
    xs, ys = task.support
    record: dict[str, Any] = {"family": task.family, "task": task.name, "task_index": ti,
                              "n_classes": task.n_classes, "accuracy": {}, "top_op": {},
                              "adapt_seconds": {}}
    keys = ("accuracy", "top_op", "adapt_seconds") + (
        ("support_accuracy",) if support_accuracy else ())
    if support_accuracy:
        record["support_accuracy"] = {}

    def have(arm: str) -> bool:
        return arm in known.get("accuracy", {}) and (
            not support_accuracy or arm in known.get("support_accuracy", {}))

    def run(state: dict[str, torch.Tensor], keep_probs: bool = False) -> dict[str, Any]:
        return _adapt_arm(model, guide, state, task, fi, ti, steps=steps, seed=seed, cfg=cfg,
                          support_accuracy=support_accuracy, keep_probs=keep_probs)

    members = list(ensemble or ())
    new_ensemble = bool(ensemble) and not (have(ENSEMBLE) and known.get(ENSEMBLE) == members)
    member_runs: dict[str, dict[str, Any]] = {}
    for arm, state in states.items():
        if have(arm) and not (new_ensemble and arm in members):
            got = {key: known[key][arm] for key in keys}
        else:
            got = run(state, keep_probs=new_ensemble and arm in members)
            if new_ensemble and arm in members:
                member_runs[arm] = got
        for key in keys:
            record[key][arm] = got[key]
    if select:
        candidates = {a: (states if starts is None else starts)[a] for a in select}
        selection = reuse_selection(known.get("selection"), select, select_criterion, select_at)
        same_choice = selection is not None and selection is known.get("selection")
        if selection is not None:
            seconds = known["adapt_seconds"][SELECT]
        else:
            start = time.perf_counter()
            sel = select_start(model, guide, candidates, xs, ys, n_classes=task.n_classes,
                               steps=steps if select_at == EACH else [select_at],
                               temperature=cfg.adapt_temperature,
                               num_samples=cfg.num_samples,
                               seed=pair_seed(seed, fi, ti, SELECT_SLOT),
                               criterion=select_criterion)
            seconds = time.perf_counter() - start  # the choice
            selection = sel.to_dict() | ({} if select_at == EACH else {"select_at": select_at})
        record["selection"] = selection
        chosen = chosen_arms(selection, steps)
        if select_at == EACH:  # every candidate's arm is evaluated
            got = {key: [record[key][chosen[k]][j] for j, k in enumerate(steps)]
                   for key in keys if key not in ("top_op", "adapt_seconds")}
            got["top_op"] = record["top_op"][chosen[max(steps)]]
        else:
            arm = chosen[steps[0]]
            if arm in record["accuracy"]:
                got = {key: record[key][arm] for key in keys}
            elif have(arm):
                got = {key: known[key][arm] for key in keys}
            elif have(SELECT) and same_choice:  # its own adaptation, made before
                got = {key: known[key][SELECT] for key in keys}
            else:  # an ensemble member from the same start: one adaptation serves both
                keep = new_ensemble and arm in members and _same_state(candidates[arm],
                                                                       ensemble[arm])
                got = run(candidates[arm], keep_probs=keep)
                if keep:
                    member_runs[arm] = got
                got = dict(got)  # the select arm's seconds below are not the member's
                seconds += got["adapt_seconds"]  # the choice and the chosen start's steps
        got["adapt_seconds"] = seconds
        for key in keys:
            record[key][SELECT] = got[key]
    if ensemble:
        if new_ensemble:
            runs = {m: member_runs.get(m) or run(ensemble[m], keep_probs=True) for m in members}
            got = _ensemble_arm(runs, task, model.space.ops, keys)
        else:
            got = {key: known[key][ENSEMBLE] for key in keys}
        for key in keys:
            record[key][ENSEMBLE] = got[key]
        record[ENSEMBLE] = members
    preferred = PREFERRED.get(task.family)
    record["matches_preference"] = (None if preferred is None or "meta" not in states else
                                    record["top_op"]["meta"].get("normal") in preferred)
    return record


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def chosen_arms(selection: dict[str, Any], steps: Sequence[int]) -> dict[int, str]:
    """Per step count of ``steps``, the arm a task's ``selection`` record starts from: the
    choice at that step count, or, where the record chose once (``select_at``), that one."""
    chosen = {int(k): v for k, v in selection["chosen"].items()}
    at = selection.get("select_at", EACH)
    return {k: chosen[k if at == EACH else int(at)] for k in steps}


def reuse_selection(known: dict[str, Any] | None, select: Sequence[str], criterion: str,
                    select_at: int | str) -> dict[str, Any] | None:
    """An earlier ``selection`` record that answers this choice (the same candidates and
    criterion, made at ``select_at``), or ``None``. A choice at every step count answers a
    choice at one of them: the candidates' paths are the same (an adaptation to ``k`` steps
    is the first ``k`` steps of a longer one), and only that step count is kept."""
    if known is None or known["candidates"] != list(select) or \
            known.get("criterion", "accuracy") != criterion:
        return None
    at = known.get("select_at", EACH)
    if at == select_at:
        return known
    if at != EACH or select_at == EACH or str(select_at) not in known["chosen"]:
        return None
    return restrict_selection(known, [int(select_at)]) | {"select_at": int(select_at)}


@dataclass
class _Setup:
    """What every unit needs, rebuilt from the run directory in each process."""

    model: Any
    guide: Any
    cfg: Any
    state: dict[str, Any]
    states: dict[str, dict[str, torch.Tensor]]
    by_family: dict[str, list[Task]]
    elbo_impl: str
    select: tuple[str, ...] | None = None
    select_criterion: str = SELECT_CRITERION
    select_at: int | str = EACH
    starts: dict[str, dict[str, torch.Tensor]] | None = None
    ensemble: dict[str, dict[str, torch.Tensor]] | None = None


def _setup(run_path: Path, *, device: str, arms: Sequence[str], tasks_per_family: int,
           elbo_impl: str | None, sharpness: float | None = None,
           select_from: Sequence[str] = SELECT_FROM,
           select_criterion: str = SELECT_CRITERION,
           select_at: int | str | None = None,
           ensemble_from: Sequence[str] = ENSEMBLE_FROM) -> _Setup:
    """Model, guide, arm states and tasks of the run at ``run_path`` (``elbo_impl`` ``None``:
    resolved as :func:`evaluate_run` says; ``sharpness`` and ``select_at`` ``None``: the
    run's own ``adapt_sharpness`` and ``adapt_steps``)."""
    dev = resolve_device(device)
    model, _, cfg, state = load_trained(run_path, device=dev, sharpness=sharpness)
    if elbo_impl is None:
        elbo_impl = cfg.elbo_impl
        if elbo_impl == "pyro":
            try:
                check_supported(model)
                elbo_impl = "functional"
            except ValueError:
                pass
    guide = build_guide(cfg.replace(elbo_impl=elbo_impl), model)
    meta = {k: v.detach().clone() for k, v in model.W.state_dict().items()}
    every = _arm_states(cfg, meta, dev)
    states = {a: s for a, s in every.items() if a in arms}
    by_family = family_tasks(build_tasks(cfg, build_space(cfg)), tasks_per_family)
    select = None
    if SELECT in arms:
        starts = selection_starts(model, cfg, select_from,
                                  components=checkpoint_components(state))
        select = tuple(TRANSFER_ARMS.get(n, n) for n in starts)
        every |= {n: v for n, v in starts.items() if n not in TRANSFER_ARMS}
    ensemble = None
    if ENSEMBLE in arms:
        starts = selection_starts(model, cfg, ensemble_from,
                                  components=checkpoint_components(state))
        ensemble = {TRANSFER_ARMS.get(n, n): v for n, v in starts.items()}
    return _Setup(model, guide, cfg, state, states, by_family, elbo_impl, select,
                  select_criterion, int(cfg.adapt_steps) if select_at is None else select_at,
                  {a: every[a] for a in select} if select else None, ensemble)


def _worker_context(run_path: str, setup_kwargs: dict[str, Any], steps: list[int],
                    seed: int, support_accuracy: bool = False,
                    ) -> tuple[_Setup, list[int], int, bool]:
    """A worker process's context (see :mod:`.workers`): the run rebuilt from its directory."""
    return _setup(Path(run_path), **setup_kwargs), steps, seed, support_accuracy


def _worker_unit(context: tuple[_Setup, list[int], int, bool], fi: int, ti: int,
                 known: dict[str, Any] | None = None) -> dict[str, Any]:
    """Unit ``(fi, ti)`` in a worker process, on its :func:`_worker_context`."""
    s, steps, seed, support_accuracy = context
    task = list(s.by_family.values())[fi][ti]
    return _evaluate_task(s.model, s.guide, s.states, task, fi, ti, steps=steps, seed=seed,
                          cfg=s.cfg, support_accuracy=support_accuracy, select=s.select,
                          select_criterion=s.select_criterion, select_at=s.select_at,
                          starts=s.starts, known=known, ensemble=s.ensemble)


# what an earlier evaluation must share with this one for its arms to be taken as they are
REUSE_KEYS = ("seed", "elbo_impl", "adapt_temperature", "adapt_sharpness", "num_samples",
              "task_source", "checkpoint_step", "start_digest")


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """A SHA-256 of the meta arm's start (names and float64 values), recorded in the settings:
    an evaluation of another ``W`` (a resumed or refit run) is never reused for this one."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return h.hexdigest()


def known_records(earlier: dict[str, Any], settings: dict[str, Any], steps: Sequence[int],
                  ) -> dict[tuple[str, int], dict[str, Any]]:
    """The records of ``earlier`` (an evaluation of the same run) by (family, task index),
    restricted to ``steps``, if its settings agree with ``settings`` on :data:`REUSE_KEYS`
    (``start_digest`` is not compared where ``earlier`` predates it; a missing
    ``adapt_sharpness`` reads as 1) and it has every one of ``steps``; else none."""
    have = earlier.get("settings", {})

    def same(key: str) -> bool:
        if key == "start_digest" and key not in have:
            return True
        return have.get(key, 1.0 if key == "adapt_sharpness" else None) == settings.get(key)

    if not all(same(k) for k in REUSE_KEYS) or not set(steps) <= set(have.get("steps", [])):
        return {}
    return {(t["family"], t["task_index"]): t
            for t in restrict(earlier, steps=list(steps))["tasks"]}


def evaluate_run(run_dir: str | os.PathLike, *, tasks_per_family: int = 20,
                 steps: Sequence[int] = (0, 5, 10, 20, 40, 80),
                 arms: Sequence[str] = DEFAULT_ARMS,
                 device: str = "cpu", seed: int = 0, n_boot: int = 2000,
                 progress: bool = False, elbo_impl: str | None = None,
                 workers: int = 1, support_accuracy: bool = False,
                 sharpness: float | None = None,
                 select_from: Sequence[str] = SELECT_FROM,
                 select_criterion: str = SELECT_CRITERION,
                 select_at: int | str | None = None,
                 ensemble_from: Sequence[str] = ENSEMBLE_FROM,
                 reuse: dict[str, Any] | None = None) -> EvaluationResult:
    """Evaluate the run in ``run_dir``; writes ``evaluation/evaluation.json`` and
    ``evaluation/curves.png`` there (see the module docstring).

    :param elbo_impl: the inner loop's loss; ``None``: ``"functional"`` (Pyro's loss without
        Pyro's tracing, faster) where the model supports it, else the run's own.
    :param workers: processes evaluating the (family, task) units; above 1, each is started
        with "spawn", uses one torch thread and rebuilds the model, guide, arms and tasks from
        ``run_dir`` itself. The records (all but their ``adapt_seconds``) and so the summary
        are the same floats as with ``workers=1`` in a process with one torch thread, in the
        same order.
    :param support_accuracy: also read each arm's accuracy on the support set (see the module
        docstring; about a fifth more time).
    :param sharpness: the power of the architecture prior every arm with the meta-trained
        logits adapts from (:func:`~pyro_base.inference.run.factory.sharpen_architecture`);
        ``None``: the run's ``adapt_sharpness``. Recorded in the settings.
    :param select_from: the starts the ``select`` arm chooses between, the preferred first
        (names of :data:`TRANSFER_ARMS`, whose arms with ``select_at="each"`` must be among
        ``arms``, or ``"components"``, one start per family component of the run's refit,
        which needs one choice, not ``"each"``), and
        ``select_criterion`` the held-out score it maximises (``"accuracy"`` or
        ``"loglik"``). Both recorded in the settings.
    :param select_at: the step count after which the ``select`` arm chooses, once per task,
        the start its whole curve reads (``None``: the run's ``adapt_steps``, the budget
        ``pyro-base adapt`` chooses for by default), or ``"each"``: a choice at every step
        count of ``steps``, which adapts the candidates to ``max(steps)``. Recorded in the
        settings as the step count or ``"each"``.
    :param ensemble_from: the starts the ``ensemble`` arm adapts and averages (names as
        ``select_from``'s; ``"components"`` too), recorded in the settings and, per task, in
        the record (``"ensemble"``: the members' arm names), which a reuse must match.
    :param reuse: an earlier evaluation of this run (``evaluation.json`` as read): the arms
        (and the choice of ``select``) its records hold are taken from it where its settings
        allow (:func:`known_records`), the others computed; each arm's numbers depend only on
        its own seeds, so the result equals an evaluation of all the arms at once.
    :raises ValueError: a bad argument (named), or a run directory without a config or
        checkpoint (:class:`~pyro_base.inference.run.run_dir.RunDirError`).
    """
    _check_settings(tasks_per_family, steps, arms, device, seed, n_boot, elbo_impl, workers,
                    select_from, select_criterion, select_at, ensemble_from)
    select_from, ensemble_from = list(select_from), list(ensemble_from)
    select_at = select_at if select_at is None or select_at == EACH else int(select_at)
    steps, arms = sorted(int(s) for s in steps), list(arms)
    run = load_run(run_dir, require=(CONFIG, CHECKPOINT))
    dev = resolve_device(device)
    start = time.perf_counter()
    s = _setup(run.path, device=str(dev), arms=arms, tasks_per_family=tasks_per_family,
               elbo_impl=elbo_impl, sharpness=sharpness, select_from=select_from,
               select_criterion=select_criterion, select_at=select_at,
               ensemble_from=ensemble_from)
    digest = state_digest(s.model.W.state_dict())  # the meta arm's start
    known = known_records(reuse, {"seed": seed, "elbo_impl": s.elbo_impl,
                                  "adapt_temperature": s.cfg.adapt_temperature,
                                  "adapt_sharpness": s.cfg.adapt_sharpness,
                                  "num_samples": s.cfg.num_samples,
                                  "task_source": s.cfg.task_source,
                                  "checkpoint_step": int(s.state["svi"]["step"]),
                                  "start_digest": digest}, steps) if reuse else {}
    units = [(fi, ti, known.get((family, ti))) for fi, (family, ts)
             in enumerate(s.by_family.items()) for ti in range(len(ts))]
    workers = min(int(workers), len(units))
    log.info("evaluating %s: %d families x %d tasks x %d arms, %d steps, elbo_impl %s, "
             "%d workers", run.path, len(s.by_family), tasks_per_family, len(arms), steps[-1],
             s.elbo_impl, workers)
    if workers > 1:
        setup_kwargs = {"device": str(dev), "arms": arms, "tasks_per_family": tasks_per_family,
                        "elbo_impl": s.elbo_impl, "sharpness": s.cfg.adapt_sharpness,
                        "select_from": select_from, "select_criterion": select_criterion,
                        "select_at": s.select_at, "ensemble_from": ensemble_from}
        records = evaluate_parallel(units, workers, setup=_worker_context,
                                    setup_args=(str(run.path), setup_kwargs, steps, seed,
                                                support_accuracy),
                                    unit=_worker_unit, progress=progress)
    else:
        tasks = list(s.by_family.values())
        records = [_evaluate_task(s.model, s.guide, s.states, tasks[fi][ti], fi, ti,
                                  steps=steps, seed=seed, cfg=s.cfg,
                                  support_accuracy=support_accuracy, select=s.select,
                                  select_criterion=s.select_criterion,
                                  select_at=s.select_at, starts=s.starts, known=k,
                                  ensemble=s.ensemble)
                   for fi, ti, k in tqdm(units, disable=not progress, desc="evaluate")]
    families = summarize(records, steps=steps, arms=arms, seed=seed, n_boot=n_boot)
    settings = {"run_dir": str(run.path), "checkpoint_step": int(s.state["svi"]["step"]),
                "tasks_per_family": tasks_per_family, "steps": steps, "arms": arms,
                "device": str(dev), "seed": seed, "n_boot": n_boot, "elbo_impl": s.elbo_impl,
                "adapt_temperature": s.cfg.adapt_temperature,
                "adapt_sharpness": s.cfg.adapt_sharpness,
                "num_samples": s.cfg.num_samples, "task_source": s.cfg.task_source,
                "families": list(s.by_family), "workers": workers,
                "support_accuracy": support_accuracy, "start_digest": digest,
                "reused": sum(k is not None for _, _, k in units),
                **({"select_from": select_from, "select_criterion": select_criterion,
                    "select_at": s.select_at} if SELECT in arms else {}),
                **({"ensemble_from": ensemble_from} if ENSEMBLE in arms else {})}
    result = EvaluationResult(settings=settings, families=families, tasks=records,
                              seconds=time.perf_counter() - start, path=run.path / FOLDER)
    log.info("evaluated %d tasks in %.0f s", len(records), result.seconds)
    write_result(result)
    return result


def write_result(result: EvaluationResult) -> tuple[Path, Path]:
    """``evaluation.json`` and ``curves.png`` in ``result.path``, each written atomically."""
    out = RunDir(result.path)
    json_path = out.write_json(JSON_FILE, result.to_dict())
    curves = out / CURVES_FILE
    tmp = curves.with_name(f".{curves.stem}.tmp{curves.suffix}")
    os.replace(plot_adaptation_curves(result.families, tmp), curves)
    log.info("wrote %s and %s", json_path, curves)
    return json_path, curves
