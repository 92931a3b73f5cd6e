"""The main job's held-out report: adapt to test tasks, compare starts, write genotypes and ArviZ.

For each held-out task four figures are read at the same step count (``adapt_steps``):

* ``default`` (metrics key ``query_accuracy``): what a new task gets by ``adapt``'s default
  rule, ``transfer`` (:data:`~pyro_base.defaults.ADAPT_TRANSFER`): ``"ensemble"``, the
  averaged posteriors of the starts ``ensemble_from`` (by default the whole meta-prior, its
  architecture prior with the run's initial weights ``W_0``, and ``W_0``;
  :mod:`~pyro_base.inference.run.ensemble`; ``start`` then reads ``ensemble``), or
  ``"select"``, of the starts ``select_from`` the one with the higher held-out score on a
  quarter of the support set (:mod:`~pyro_base.inference.run.selection`), and the start it
  chose (``start``). Both are seeded with the task's seed here, ``adapt``'s with its
  ``--seed``, so the two may differ;
* ``meta`` (``meta_accuracy``): adaptation from the whole meta-learned ``W`` (``adapt
  --transfer all``);
* ``0-shot`` (``prior_only_accuracy``): the supernet at ``W`` with zero adaptation, chance by
  construction where class labels are drawn per task, so not the poster's multi-task prior
  (that is ``W``'s decoded genotype trained from scratch);
* ``untrained`` (``untrained_accuracy``): adaptation from the untrained ``W_0`` of the same seed.

Every start's architecture prior is sharpened by the run's ``adapt_sharpness``, as every
adaptation from a run is, and every adaptation of a task is seeded alike. This is a quick look
at a few tasks; ``scripts/evaluate.py`` is the powered, paired evaluation. The default start's
adapted genotypes go to ``genotypes/<task>.json`` (an ensemble's: the decoded average of its
members' op probabilities), and its posteriors of the held-out tasks plus the prior group to
``posterior.nc``: the meta-learned ``W`` with its sharpened architecture prior, which the
default starts share (``theta_norm`` there is ``W``'s weights; a task that chose the
architecture start adapted from ``W_0``'s; an ensemble's posterior there is its first member's,
the whole meta-prior's adapted, as ``adapt --transfer all`` gives it).

Usage::

    rows = heldout_report(cfg, model, run, device="cpu")
    print(format_table(rows))
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pyro_base import defaults
from pyro_base.genotype import Genotype
from pyro_base.inference.evaluate.workers import evaluate_parallel
from pyro_base.inference.posterior.draws import posterior_draws, save_posterior, to_inference_data
from pyro_base.inference.run.config import MetaConfig
from pyro_base.inference.run.ensemble import Ensemble, adapt_members, ensemble_probs
from pyro_base.inference.run.factory import (
    build_guide,
    build_model,
    build_space,
    build_tasks,
    sharpen_architecture,
)
from pyro_base.inference.run.runlog import GENOTYPES, POSTERIOR, RunDir, safe_name
from pyro_base.inference.run.selection import (
    Selection,
    can_hold_out,
    select_start,
    selection_starts,
)
from pyro_base.inference.vi.adapt import Adaptation, adapt
from pyro_base.inference.vi.guides import AdaptedPosterior, OptimizationEmbeddingGuide
from pyro_base.inference.vi.meta_svi import task_seed
from pyro_base.models.base_model import BASEModel

log = logging.getLogger(__name__)


def genotype_summary(genotype: Genotype) -> str:
    """Compact op counts per cell, e.g. ``N[dil_conv_5x5:3 sep_conv_3x3:2 ...]``."""
    parts = []
    for cell, pairs in (("N", genotype.normal), ("R", genotype.reduce)):
        counts: dict[str, int] = {}
        for op, _ in pairs:
            counts[op] = counts.get(op, 0) + 1
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        parts.append(f"{cell}[" + " ".join(f"{op}:{k}" for op, k in ranked) + "]")
    return " ".join(parts)


@dataclass
class _Look:
    """What adapting one held-out task needs: the sharpened meta-prior ``start`` (with its
    guide), the untrained ``W_0``, and the candidate starts of the default choice."""

    cfg: MetaConfig
    start: BASEModel
    start_guide: OptimizationEmbeddingGuide
    sharpened: dict[str, torch.Tensor]
    untrained: BASEModel
    untrained_guide: OptimizationEmbeddingGuide
    starts: dict[str, dict[str, torch.Tensor]]
    criterion: str
    transfer: str = "select"


def _look_context(cfg: dict[str, Any], W: dict[str, torch.Tensor], select_from: Sequence[str],
                  criterion: str, components: dict[str, dict[str, torch.Tensor]] | None = None,
                  transfer: str = "select", device: torch.device | str = "cpu") -> _Look:
    """The models of the look at meta-trained ``W`` (its prior sharpened, as adapt does)."""
    config = MetaConfig.from_dict(cfg)
    if config.deterministic:  # as the meta-step's workers
        torch.use_deterministic_algorithms(True, warn_only=True)
    space = build_space(config)
    untrained = build_model(config, space, device=device)
    start = build_model(config, space, device=device)
    start.W.load_state_dict(sharpen_architecture(W, config.adapt_sharpness))
    sharpened = {k: v.detach().clone() for k, v in start.W.state_dict().items()}  # on device
    return _Look(config, start, build_guide(config, start), sharpened, untrained,
                 build_guide(config, untrained),
                 selection_starts(start, config, select_from, components=components), criterion,
                 transfer)


def _look_task(look: _Look, i: int, task: Any) -> dict[str, Any]:
    """Held-out task ``i``: its row and the default start's adaptation (posterior, losses,
    genotype). Every adaptation is seeded as meta-step ``steps`` of task ``i``."""
    cfg, start, start_guide = look.cfg, look.start, look.start_guide
    seed = task_seed(cfg.seed, cfg.steps, i)  # never a training step; the same for every start
    results: dict[str, Adaptation] = {}
    for name, (m, g, steps) in {"meta": (start, start_guide, cfg.adapt_steps),
                                "prior_only": (start, start_guide, 0),
                                "untrained": (look.untrained, look.untrained_guide,
                                              cfg.adapt_steps)}.items():
        torch.manual_seed(seed)
        results[name] = adapt(m, g, task, steps=steps, temperature=cfg.adapt_temperature,
                              num_samples=cfg.num_samples)
    if look.transfer == "ensemble":
        return _look_ensemble(look, task, seed, results)
    began = time.perf_counter()
    chosen, selection = _choose_start(cfg, start, start_guide, look.starts, task, seed=seed,
                                      criterion=look.criterion)
    choice_seconds = time.perf_counter() - began
    start.W.load_state_dict(look.sharpened)  # select_start leaves the last candidate's
    if chosen == "all":  # the whole meta-prior: `meta`'s adaptation, seeded alike
        default = results["meta"]
    else:  # adapt the chosen start on the whole support set, seeded alike
        start.W.load_state_dict(look.starts[chosen])
        torch.manual_seed(seed)
        default = adapt(start, start_guide, task, steps=cfg.adapt_steps,
                        temperature=cfg.adapt_temperature, num_samples=cfg.num_samples)
    # a 0-step posterior is the start's own parameters: copy them before the start is reset
    posterior = default.posterior.clone()
    start.W.load_state_dict(look.sharpened)
    row = {"event": "adapt", "task": task.name, "family": task.family,
           "n_classes": task.n_classes, "steps": cfg.adapt_steps,
           "query_accuracy": default.query_accuracy, "start": chosen,
           **({} if selection is None else {"selection": selection.to_dict()}),
           "meta_accuracy": results["meta"].query_accuracy,
           "prior_only_accuracy": results["prior_only"].query_accuracy,
           "untrained_accuracy": results["untrained"].query_accuracy,
           "adapt_seconds": default.seconds, "choice_seconds": choice_seconds,
           "genotype": genotype_summary(default.genotype)}
    return {"row": row, "posterior": posterior, "losses": default.losses,
            "genotype": default.genotype}


def _look_ensemble(look: _Look, task: Any, seed: int, results: dict[str, Adaptation],
                   ) -> dict[str, Any]:
    """The row of a look whose default is the ensemble of ``look.starts``, seeded alike."""
    cfg, start = look.cfg, look.start
    task = task.to(start.W.mu.device)
    (xs, ys), (xq, yq) = task.support, task.query
    # the whole meta-prior and W_0 were adapted for the other columns, from the same seed
    done = {"all": results["meta"], "none": results["untrained"]}
    began = time.perf_counter()
    rest = {m: state for m, state in look.starts.items() if m not in done}
    paths, losses = adapt_members(start, look.start_guide, rest, xs, ys,
                                  n_classes=task.n_classes, temperature=cfg.adapt_temperature,
                                  steps=[cfg.adapt_steps], seed=seed)
    for m in look.starts.keys() & done.keys():
        paths[m] = {cfg.adapt_steps: done[m].posterior.clone()}
        losses[m] = done[m].losses
    ens = Ensemble(members=tuple(look.starts), paths=paths, losses=losses)
    seconds = time.perf_counter() - began + sum(done[m].seconds for m in look.starts.keys()
                                                & done.keys())
    probs = ensemble_probs(start, ens, cfg.adapt_steps, xq, n_classes=task.n_classes,
                           temperature=cfg.adapt_temperature, num_samples=cfg.num_samples,
                           seed=seed + 1)
    start.W.load_state_dict(look.sharpened)
    genotype = ens.genotype(cfg.adapt_steps, start.space)
    first = ens.members[0]
    row = {"event": "adapt", "task": task.name, "family": task.family,
           "n_classes": task.n_classes, "steps": cfg.adapt_steps,
           "query_accuracy": float((probs.argmax(-1) == yq).float().mean()),
           "start": "ensemble", "ensemble": list(ens.members),
           "meta_accuracy": results["meta"].query_accuracy,
           "prior_only_accuracy": results["prior_only"].query_accuracy,
           "untrained_accuracy": results["untrained"].query_accuracy,
           "adapt_seconds": seconds, "choice_seconds": 0.0,
           "genotype": genotype_summary(genotype)}
    return {"row": row, "posterior": ens.paths[first][cfg.adapt_steps],
            "losses": ens.losses[first], "genotype": genotype}


def _choose_start(cfg: MetaConfig, model: BASEModel, guide: OptimizationEmbeddingGuide,
                  starts: dict[str, dict[str, torch.Tensor]], task: Any, *, seed: int,
                  criterion: str) -> tuple[str, Selection | None]:
    """The start ``adapt``'s rule chooses for ``task`` at the run's budget (seeded with
    ``seed``), and the scores; a support set that leaves nothing to hold out takes the first
    start, as ``adapt`` does."""
    xs, ys = task.to(model.W.mu.device).support
    if not can_hold_out(ys, n_classes=task.n_classes):
        return next(iter(starts)), None
    sel = select_start(model, guide, starts, xs, ys, n_classes=task.n_classes,
                       steps=[cfg.adapt_steps], temperature=cfg.adapt_temperature,
                       num_samples=cfg.num_samples, seed=seed, criterion=criterion)
    return sel.chosen[cfg.adapt_steps], sel


def heldout_report(cfg: MetaConfig, model: BASEModel, run: RunDir, *,
                   device: torch.device | str, distribution: Any = None,
                   select_from: Sequence[str] = defaults.SELECT_FROM,
                   select_criterion: str = defaults.SELECT_CRITERION,
                   components: dict[str, dict[str, torch.Tensor]] | None = None,
                   transfer: str = defaults.ADAPT_TRANSFER,
                   ensemble_from: Sequence[str] = defaults.ENSEMBLE_FROM,
                   ) -> list[dict[str, Any]]:
    """Adapt to ``cfg.n_heldout`` test tasks of ``distribution`` (default: the one ``cfg``
    names, built afresh) by ``adapt``'s default, ``transfer`` (``"ensemble"``: the averaged
    posteriors of the starts ``ensemble_from``; ``"select"``: the one of ``select_from`` that
    scores the higher held-out ``select_criterion``; starts built from ``model``'s meta-trained
    ``W``), from the whole ``W``, and from ``W_0``; write genotypes, metrics and
    ``posterior.nc``. ``components`` are the refit's family components, the starts
    ``"components"`` stands for.

    On a CPU the tasks are spread over ``cfg.meta_workers`` processes (one torch thread each;
    every task seeds its own adaptations, so the rows do not depend on the number)."""
    space = build_space(cfg)
    if distribution is None:
        distribution = build_tasks(cfg, space)
    tasks = distribution.tasks("test", cfg.n_heldout)
    W = {k: v.detach().cpu().clone() for k, v in model.W.state_dict().items()}
    comps = {f: {k: v.detach().cpu() for k, v in c.items()} for f, c in (components or {}).items()}
    if transfer not in ("select", "ensemble"):
        raise ValueError(f"transfer must be 'select' or 'ensemble', got {transfer!r}")
    starts = tuple(ensemble_from if transfer == "ensemble" else select_from)
    args = (cfg.to_dict(), W, starts, select_criterion, comps, transfer)
    workers = min(cfg.meta_workers, len(tasks))
    look = _look_context(*args, device=device)  # the posterior's model, and the serial look
    if workers > 1 and look.start.W.mu.device.type == "cpu":
        looked = evaluate_parallel([(i, t) for i, t in enumerate(tasks)], workers,
                                   setup=_look_context, setup_args=args, unit=_look_task,
                                   desc="held-out look")
    else:
        looked = [_look_task(look, i, t) for i, t in enumerate(tasks)]
    rows = []
    for task, result in zip(tasks, looked, strict=True):
        run.write_json(f"{GENOTYPES}/{safe_name(task.name)}.json", result["genotype"].to_dict())
        run.append_metrics(result["row"])
        rows.append(result["row"])
    if run.enabled:  # the prior group: the sharpened meta-prior the tasks' starts share
        write_posterior(cfg, look.start, look.start_guide, tasks,
                        {t.name: r["posterior"] for t, r in zip(tasks, looked, strict=True)},
                        run, inner_losses={t.name: r["losses"]
                                           for t, r in zip(tasks, looked, strict=True)})
    return rows


def write_posterior(cfg: MetaConfig, model: BASEModel, guide: OptimizationEmbeddingGuide,
                    tasks: list[Any], posteriors: dict[str, AdaptedPosterior],
                    run: RunDir, *, inner_losses: dict[str, list[float]] | None = None) -> None:
    """``posterior.nc``: the adapted posteriors of ``tasks`` and the prior group ``q = W`` of
    ``model`` (``adapt``: the start its task adapted from; the main job: the meta-prior, whose
    architecture prior the default starts share), its architecture logits already sharpened by
    ``cfg.adapt_sharpness``, which the file records as the attribute ``adapt_sharpness``.

    ``cfg.posterior_draws`` (64) draws per task: with 16, every Pareto k of ``az.loo`` was above
    1; with 64, 7% were above 0.7 (200: 3%), measured on two held-out tasks of a default run.
    """
    source = {**posteriors, "prior": guide.prior_posterior()}
    draws = posterior_draws(model, source, tasks, cfg.posterior_draws,
                            temperature=cfg.adapt_temperature, include_prior=True,
                            steps=cfg.adapt_steps, theta_depth=2, seed=cfg.seed,
                            inner_losses=inner_losses)
    idata = to_inference_data(draws, space=model.space,
                              attrs={"adapt_sharpness": float(cfg.adapt_sharpness)})
    path = save_posterior(idata, run / POSTERIOR)
    log.info("wrote %s", path)


def format_table(rows: list[dict[str, Any]]) -> str:
    w = max([12, *(len(r["start"]) for r in rows)])  # "architecture:<family>" is longer
    head = (f"{'task':34s} {'family':14s} {'default':>7s} {'start':{w}s} {'meta':>6s} "
            f"{'0-shot':>6s} {'untrn':>6s}  genotype (default)")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['task']:34s} {r['family']:14s} {r['query_accuracy']:7.3f} "
                     f"{r['start']:{w}s} {r['meta_accuracy']:6.3f} "
                     f"{r['prior_only_accuracy']:6.3f} {r['untrained_accuracy']:6.3f}  "
                     f"{r['genotype']}")
    return "\n".join(lines)
