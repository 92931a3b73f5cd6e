"""Adapt a saved meta-prior to a task the user brings: the second step of BASE's pipeline.

:func:`adapt_prior` reads a meta-training run (its search space, ``W`` and settings), checks
that the task fits the prior's search space, runs the optimization-embedding inner loop on the
task's support set and writes the adaptation directory:

    ADAPT_DIR/genotype.json     the posterior's most probable cell (BASE's decoding rule)
    ADAPT_DIR/posterior.nc      ArviZ InferenceData: the adapted posterior and the prior q = W
    ADAPT_DIR/curve.json        query accuracy after each of ``curve_steps`` inner steps
    ADAPT_DIR/curve.png         the same, drawn
    ADAPT_DIR/adapt.json        settings, query accuracy, op probabilities, cost, prior run

The cost is counted as :mod:`pyro_base.inference.search` counts a search from scratch (wall
seconds, supernet forward-backward passes, images), so the two compare directly. ``steps=0``
gives the poster's "multi-task prior": the genotype of ``W``'s own architecture logits.

``transfer`` says where the task starts. ``"ensemble"`` (the default): every start of
``ensemble_from`` (default ``all``, ``architecture`` and ``none``, below) is adapted on the
whole support set and their posteriors are averaged (:mod:`~pyro_base.inference.run.ensemble`;
one adaptation's cost per start); the curve and query accuracy are the averaged posterior
predictive's, the genotype decodes the averaged op probabilities, ``posterior.nc`` holds each
member's posterior as its own task (``<task>@<start>``) and ``adapt.json`` the members.
``"all"``: the whole meta-prior. ``"architecture"``: the meta-trained architecture logits (the
refit ones where the run refit them) with the weights the run started from (``W_0``, rebuilt
from its config and seed) (:func:`~pyro_base.inference.run.factory.transfer_state`).
``"none"``: ``W_0`` itself. ``"select"``: the task chooses among the starts ``select_from``
(default ``all`` and ``architecture``; ``components`` adds one start per family component of
the run's architecture refit) by ``select_criterion`` (default the held-out log-likelihood) on
a quarter of its support set at the step budget (:mod:`~pyro_base.inference.run.selection`;
one adaptation on 3/4 of the support set per candidate, then the chosen one's: about three
times the cost of one adaptation with two candidates; a one-shot support set takes the first
start); ``adapt.json`` then records the held-out scores and the start chosen.

On the embedded task families the meta-trained weights memorise the support set of one family
(``relation``) and lose to the untrained start there after 40 steps or more, while the refit
architecture logits with ``W_0``'s weights gain, and the sharpened architecture prior keeps
``cooccurrence``'s tasks from the ops the untrained start finds after 80 steps. The choice lets
each task take one start; the ensemble keeps all three, and on the runs measured it gains more
than the choice on most families and budgets and, once adapted, is never below the untrained
start. The README's "Does
meta-training learn?" and ``docs/meta_learning.md`` ("Averaging the starts", "Choosing the
start per task") give the numbers.

Usage::

    record = adapt_prior("runs/meta_svi-...", task, steps=20, out="runs/adapt-motif")
    record["query_accuracy"], record["cost"], record["ensemble"]   # its members
    adapt_prior("runs/meta_svi-...", task, out="runs/adapt-sel", transfer="select")
    adapt_prior("runs/meta_svi-...", task, out="runs/adapt-arch", transfer="architecture")
    adapt_prior("runs/meta_svi-...", task, out="runs/adapt-all", transfer="all")
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pyro_base import defaults
from pyro_base.config import ConfigError
from pyro_base.inference.report.plots import plot_adaptation_curves
from pyro_base.inference.run.ensemble import Ensemble, adapt_ensemble, ensemble_probs
from pyro_base.inference.run.factory import TRANSFERS, load_trained
from pyro_base.inference.run.heldout import write_posterior
from pyro_base.inference.run.runlog import CHECKPOINT, CONFIG, RunDir
from pyro_base.inference.run.selection import (  # noqa: F401  (re-exported)
    can_hold_out,
    check_select_from,
    checkpoint_components,
    select_start,
    selection_starts,
)
from pyro_base.inference.search.config import SearchCost
from pyro_base.search_space import SearchSpace
from pyro_base.tasks.base import Task
from pyro_base.training import resolve_device

log = logging.getLogger(__name__)

GENOTYPE, CURVE, CURVE_PLOT, RECORD = "genotype.json", "curve.json", "curve.png", "adapt.json"
STARTS = (*TRANSFERS, "select", "ensemble")  # what adaptation may start from
SELECT_FROM = defaults.SELECT_FROM  # the default candidates of "select", the preferred first
SELECT_CRITERION = defaults.SELECT_CRITERION  # its default held-out score (selection.CRITERIA)
ENSEMBLE_FROM = defaults.ENSEMBLE_FROM  # the default members of "ensemble"


def check_task_fits(task: Task, space: SearchSpace, prior: str | os.PathLike) -> Task:
    """The task as the prior's search space takes it (grey images made RGB, as meta-training
    does); a task it cannot take is refused, naming both values."""
    c, h, w = task.image_shape
    if c == 1 and space.in_channels == 3:
        task = dataclasses.replace(
            task, support=(task.support[0].expand(-1, 3, -1, -1), task.support[1]),
            query=(task.query[0].expand(-1, 3, -1, -1), task.query[1]))
        c = 3
    if (h, w) != (space.input_size, space.input_size):
        raise ConfigError(f"the task's images are {h}x{w} but the prior {prior} was "
                          f"meta-trained at {space.input_size}x{space.input_size}; resize the "
                          f"task to it (--image-size {space.input_size})")
    if c != space.in_channels:
        raise ConfigError(f"the task's images have {c} channels but the prior {prior} takes "
                          f"{space.in_channels}")
    if not 2 <= task.n_classes <= space.n_classes:
        raise ConfigError(f"the task has {task.n_classes} classes but the prior {prior} has "
                          f"{space.n_classes} outputs; use a class subset of at most "
                          f"{space.n_classes} classes")
    return task


def _score(model: Any, ens: Ensemble, task: Task, steps: list[int], *, temperature: float,
           num_samples: int, seed: int) -> dict[int, float]:
    """Query accuracy of the (averaged) posterior predictive after each step count; a single
    start is an ensemble of one."""
    xq, yq = task.query
    return {k: float((ensemble_probs(model, ens, k, xq, n_classes=task.n_classes,
                                     temperature=temperature, num_samples=num_samples,
                                     seed=seed + 1 + k).argmax(-1) == yq).float().mean())
            for k in steps}


def _plot_curve(run: RunDir, task: Task, steps: list[int], accuracy: list[float]) -> None:
    tmp = run / f".{CURVE_PLOT}.tmp.png"
    families = {task.family or task.name: {"steps": steps, "n_tasks": 1, "accuracy": {
        "adapted": {"mean": accuracy, "lo": accuracy, "hi": accuracy}}}}
    os.replace(plot_adaptation_curves(families, tmp), run / CURVE_PLOT)


def adapt_prior(prior: str | os.PathLike, task: Task, *, out: str | os.PathLike,
                steps: int | None = None, curve_steps: tuple[int, ...] | None = None,
                temperature: float | None = None, num_samples: int | None = None,
                draws: int | None = None, seed: int = 0, device: str = "auto",
                transfer: str = defaults.ADAPT_TRANSFER, sharpness: float | None = None,
                select_from: Sequence[str] = SELECT_FROM,
                select_criterion: str = SELECT_CRITERION,
                ensemble_from: Sequence[str] = ENSEMBLE_FROM) -> dict[str, Any]:
    """Adapt the meta-prior of run ``prior`` to ``task``; write and return the record.

    ``steps``, ``temperature``, ``num_samples`` (predictive draws for the query accuracy) and
    ``draws`` (posterior draws in ``posterior.nc``) default to the run's own settings;
    ``curve_steps`` to ``0, 5, 10, 20, 40, 80`` up to ``steps`` (and ``steps`` itself).
    ``transfer`` says what of the meta-prior the task starts from (one of :data:`STARTS`;
    see the module docstring); ``sharpness`` is the power of its architecture prior
    (:func:`~pyro_base.inference.run.factory.sharpen_architecture`; default: the run's
    ``adapt_sharpness``); ``select_from`` are the candidates of ``transfer="select"``, the
    preferred first, and ``select_criterion`` the held-out score it chooses by;
    ``ensemble_from`` are the starts of ``transfer="ensemble"``.
    """
    if transfer not in STARTS:
        raise ConfigError(f"transfer must be one of {STARTS}, got {transfer!r}")
    select_from = check_select_from(select_from)
    ensemble_from = check_select_from(ensemble_from, flag="ensemble_from (--ensemble-from)")
    if any((Path(out) / name).exists() for name in (CHECKPOINT, CONFIG)):
        raise ConfigError(f"--out {out} is a meta-training run directory; adapting into it "
                          "would overwrite its posterior.nc: choose another directory")
    dev = resolve_device(device)
    model, guide, cfg, state = load_trained(prior, device=dev,
                                        transfer=("all" if transfer in ("select", "ensemble")
                                                  else transfer),
                                        sharpness=sharpness)
    space = model.space
    task = check_task_fits(task, space, prior)
    steps = cfg.adapt_steps if steps is None else steps
    if steps < 0:
        raise ConfigError(f"steps must be >= 0, got {steps}")
    tau = cfg.adapt_temperature if temperature is None else temperature
    samples = cfg.num_samples if num_samples is None else num_samples
    curve = sorted({s for s in (curve_steps or (0, 5, 10, 20, 40, 80)) if s <= steps} | {steps})
    task = task.to(dev)
    (xs, ys), xq = task.support, task.query[0]
    start = time.perf_counter()
    selection, start_name = None, transfer
    if transfer == "ensemble":
        return _adapt_ensemble(prior, model, guide, cfg, state, task, out=out, steps=steps,
                               curve=curve, temperature=tau, num_samples=samples, draws=draws,
                               seed=seed, ensemble_from=ensemble_from, start=start)
    if transfer == "select":
        starts = selection_starts(model, cfg, select_from,
                                  components=checkpoint_components(state))
        start_name = next(iter(starts))  # the preferred start (a family component too)
        if can_hold_out(ys, n_classes=task.n_classes):
            selection = select_start(model, guide, starts, xs, ys, n_classes=task.n_classes,
                                     steps=[steps], temperature=tau, num_samples=samples,
                                     seed=seed, criterion=select_criterion)
            start_name = selection.chosen[steps]
            log.info("held-out accuracy / log-likelihood after %d steps %s / %s: starting "
                     "from %r", steps,
                     {n: round(a[0], 3) for n, a in selection.heldout_accuracy.items()},
                     {n: round(a[0], 3) for n, a in selection.heldout_loglik.items()},
                     start_name)
        else:
            log.warning("%s: one support image per class leaves none to hold out; transfer "
                        "'select' starts from %r", task.name, start_name)
        model.W.load_state_dict(starts[start_name])
    torch.manual_seed(seed)
    posts, losses = guide.adapt_path(xs, ys, n_classes=task.n_classes, temperature=tau,
                                     steps=curve)
    seconds = time.perf_counter() - start  # with the choice of start, if any
    accuracy = _score(model, Ensemble(members=(start_name,), paths={start_name: posts},
                                      losses={start_name: losses}), task, curve,
                      temperature=tau, num_samples=samples, seed=seed)
    post = posts[steps]
    genotype = post.genotype(space)
    batch = min(guide.batch_size or len(xs), len(xs))
    cost = SearchCost(seconds=seconds, forward_backward=steps, images=steps * batch)
    if selection is not None:  # each candidate: steps on the fit part, draws on the rest
        n = len(selection.candidates)
        fit_batch = min(guide.batch_size or selection.fit_size, selection.fit_size)
        cost = SearchCost(seconds=seconds, forward_backward=steps * (1 + n),
                          forward=n * samples,
                          images=steps * batch + n * (steps * fit_batch
                                                      + samples * selection.heldout_size))
    run = RunDir(out)
    run.write_json(GENOTYPE, genotype.to_dict())
    run.write_json(CURVE, {"steps": curve, "query_accuracy": [accuracy[k] for k in curve],
                           "inner_losses": losses})
    _plot_curve(run, task, curve, [accuracy[k] for k in curve])
    write_posterior(cfg.replace(posterior_draws=draws or cfg.posterior_draws,
                                adapt_temperature=tau, adapt_steps=steps, seed=seed),
                    model, guide, [task], {task.name: post}, run,
                    inner_losses={task.name: losses})
    record = {"prior": str(Path(prior)), "task": task.name, "family": task.family,
              "n_classes": task.n_classes, "support": len(xs), "query": len(xq),
              "steps": steps, "temperature": tau, "sharpness": cfg.adapt_sharpness,
              "seed": seed, "transfer": transfer,
              "start": start_name,
              **({} if selection is None else {"selection": selection.to_dict()}),
              "query_accuracy": accuracy[steps], "prior_accuracy": accuracy.get(0),
              "genotype": genotype.to_dict(),
              "op_probs": {c: p.tolist() for c, p in post.op_probs().items()},
              "cost": {"seconds": cost.seconds, "forward_backward": cost.forward_backward,
                       "forward": cost.forward, "images": cost.images}}
    run.write_json(RECORD, record)
    log.info("adapted %s to %s in %d steps (%.1f s): query accuracy %.3f", prior, task.name,
             steps, seconds, accuracy[steps])
    return record


def _adapt_ensemble(prior: str | os.PathLike, model: Any, guide: Any, cfg: Any,
                    state: dict[str, Any], task: Task, *, out: str | os.PathLike, steps: int,
                    curve: list[int], temperature: float, num_samples: int,
                    draws: int | None, seed: int, ensemble_from: Sequence[str],
                    start: float) -> dict[str, Any]:
    """``adapt_prior(..., transfer="ensemble")``: every start of ``ensemble_from`` adapted on
    the whole support set, the outputs written for their average (see the module
    docstring)."""
    starts = selection_starts(model, cfg, ensemble_from, components=checkpoint_components(state))
    (xs, ys), xq = task.support, task.query[0]
    ens = adapt_ensemble(model, guide, starts, xs, ys, n_classes=task.n_classes,
                         temperature=temperature, steps=curve, seed=seed)
    seconds = time.perf_counter() - start
    accuracy = _score(model, ens, task, curve, temperature=temperature,
                      num_samples=num_samples, seed=seed)
    genotype = ens.genotype(steps, model.space)
    n = len(ens.members)
    batch = min(guide.batch_size or len(xs), len(xs))
    cost = SearchCost(seconds=seconds, forward_backward=steps * n, images=steps * batch * n)
    run = RunDir(out)
    run.write_json(GENOTYPE, genotype.to_dict())
    run.write_json(CURVE, {"steps": curve, "query_accuracy": [accuracy[k] for k in curve],
                           "inner_losses": ens.losses})
    _plot_curve(run, task, curve, [accuracy[k] for k in curve])
    named = {m: dataclasses.replace(task, name=f"{task.name}@{m}") for m in ens.members}
    model.W.load_state_dict(dict(starts[ens.members[0]]))  # the prior group: the first start
    write_posterior(cfg.replace(posterior_draws=draws or cfg.posterior_draws,
                                adapt_temperature=temperature, adapt_steps=steps, seed=seed),
                    model, guide, list(named.values()),
                    {t.name: ens.paths[m][steps] for m, t in named.items()}, run,
                    inner_losses={t.name: ens.losses[m] for m, t in named.items()})
    record = {"prior": str(Path(prior)), "task": task.name, "family": task.family,
              "n_classes": task.n_classes, "support": len(xs), "query": len(xq),
              "steps": steps, "temperature": temperature, "sharpness": cfg.adapt_sharpness,
              "seed": seed, "transfer": "ensemble", "start": "ensemble",
              "ensemble": list(ens.members),
              "query_accuracy": accuracy[steps], "prior_accuracy": accuracy.get(0),
              "genotype": genotype.to_dict(),
              "op_probs": {c: p.tolist() for c, p in ens.op_probs(steps).items()},
              "cost": {"seconds": cost.seconds, "forward_backward": cost.forward_backward,
                       "forward": cost.forward, "images": cost.images}}
    run.write_json(RECORD, record)
    log.info("adapted %s to %s in %d steps, an ensemble of %s (%.1f s): query accuracy %.3f",
             prior, task.name, steps, list(ens.members), seconds, accuracy[steps])
    return record
