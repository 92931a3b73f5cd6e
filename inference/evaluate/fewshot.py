"""The few-shot protocol: N-way K-shot episodes scored with the adapted supernet directly.

Each episode is a task of ``n_way`` classes with ``k_shot`` support and ``n_query`` query
images per class, drawn from a source's held-out split (episode ``i`` from
``default_rng([seed, i])``). The meta-prior is adapted to the support set for ``steps`` inner
steps and the posterior predictive is scored on the query set, as :func:`adapt` does. The
report is the field's convention (e.g. the first BASE paper's Mini-ImageNet 5-way 5-shot
figure): mean query accuracy over episodes with a 95% interval ``1.96 * sd / sqrt(episodes)``.

Usage::

    source = episode_source("procedural", n_way=5, k_shot=5, n_query=15, image_size=16)
    report = fewshot_score(model, guide, source, episodes=600, steps=20)
    report["mean"], report["ci95"]
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pyro_base.cli import EPISODE_SOURCES
from pyro_base.inference.run.ensemble import adapt_ensemble, ensemble_probs
from pyro_base.inference.run.selection import can_hold_out, select_start
from pyro_base.inference.vi.adapt import adapt
from pyro_base.inference.vi.guides import OptimizationEmbeddingGuide
from pyro_base.models.base_model import BASEModel
from pyro_base.tasks.base import TaskDistribution, get_task_distribution


def episode_source(name: str, *, n_way: int, k_shot: int, n_query: int, image_size: int,
                   channels: int = 3, data_dir: str | Path | None = None,
                   families: tuple[str, ...] | None = None) -> TaskDistribution:
    """A task distribution whose tasks are ``n_way``-way ``k_shot``-shot episodes.

    The procedural source balances ``n_way * k_shot`` support images over its classes; the
    on-disk sources take ``k_shot`` and ``n_query`` per class from disjoint class splits.
    """
    if n_way < 2 or k_shot < 1 or n_query < 1:
        raise ValueError(f"episodes need n_way >= 2, k_shot >= 1 and n_query >= 1, got "
                         f"{n_way}, {k_shot}, {n_query}")
    if name == "procedural":
        opts: dict[str, Any] = dict(image_size=image_size, n_classes=n_way,
                                    n_support=n_way * k_shot, n_query=n_way * n_query)
        if families:
            opts["families"] = families
        return get_task_distribution("procedural", **opts)
    if name == "digits":
        return get_task_distribution("digits", image_size=image_size, n_classes=n_way,
                                     n_support=n_way * k_shot, n_query=n_way * n_query)
    opts = dict(image_size=image_size, n_classes=n_way, n_support=k_shot, n_query=n_query,
                channels=channels)
    if name not in EPISODE_SOURCES:  # those split by class already
        opts["holdout"] = "classes"
    if data_dir is not None:
        opts["path" if name == "npz" else "data_dir"] = data_dir
    return get_task_distribution(name, **opts)


def fewshot_score(model: BASEModel, guide: OptimizationEmbeddingGuide,
                  source: TaskDistribution, *, episodes: int, steps: int,
                  temperature: float, num_samples: int = 4, seed: int = 0,
                  split: str = "test", progress: bool = False,
                  starts: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
                  select_criterion: str = "accuracy", ensemble: bool = False,
                  ) -> dict[str, Any]:
    """Adapt to ``episodes`` episodes of ``split`` and score each one's query set.

    ``starts`` (name -> state dict of ``model.W``, the preferred first): each episode first
    chooses among them by its held-out ``select_criterion`` on a quarter of its support set
    after ``steps`` steps (:func:`~pyro_base.inference.run.selection.select_start`; a one-shot
    support set, with nothing to hold out, takes the first); the report counts the choices
    (``chosen``). With ``ensemble``, each episode instead adapts every start of ``starts``
    and is scored with their averaged posterior predictive
    (:mod:`~pyro_base.inference.run.ensemble`).
    """
    if ensemble and starts is None:
        raise ValueError("an ensemble needs its starts: pass starts with ensemble=True")
    if episodes < 2:
        raise ValueError(f"episodes must be >= 2 for an interval, got {episodes}")
    accuracies: list[float] = []
    chosen: list[str] = []
    start = time.perf_counter()
    for i in tqdm(range(episodes), disable=not progress, desc="episodes"):
        task = source.sample(split, np.random.default_rng([seed, i]))
        episode_seed = int(np.random.default_rng([seed, i, 1]).integers(2**62))
        if ensemble:
            task = task.to(model.W.mu.device)
            (xs, ys), (xq, yq) = task.support, task.query
            ens = adapt_ensemble(model, guide, starts, xs, ys, n_classes=task.n_classes,
                                 temperature=temperature, steps=[steps], seed=episode_seed)
            probs = ensemble_probs(model, ens, steps, xq, n_classes=task.n_classes,
                                   temperature=temperature, num_samples=num_samples,
                                   seed=episode_seed + 1)
            accuracies.append(float((probs.argmax(-1) == yq).float().mean()))
            continue
        if starts is not None:
            first = next(iter(starts))  # one image per class: nothing to hold out
            if can_hold_out(task.support[1], n_classes=task.n_classes):
                first = select_start(model, guide, starts, *task.support,
                                     n_classes=task.n_classes, steps=[steps],
                                     temperature=temperature, num_samples=num_samples,
                                     seed=episode_seed, criterion=select_criterion
                                     ).chosen[steps]
            chosen.append(first)
            model.W.load_state_dict(dict(starts[chosen[-1]]))
        torch.manual_seed(episode_seed)
        accuracies.append(adapt(model, guide, task, steps=steps, temperature=temperature,
                                num_samples=num_samples).query_accuracy)
    acc = np.asarray(accuracies)
    half = 1.96 * float(acc.std(ddof=1)) / math.sqrt(len(acc))
    return {"episodes": episodes, "split": split, "steps": steps, "temperature": temperature,
            "mean": float(acc.mean()), "ci95": half,
            "interval": [float(acc.mean()) - half, float(acc.mean()) + half],
            "seconds": time.perf_counter() - start, "accuracies": acc.tolist(),
            **({"chosen": {n: chosen.count(n) for n in starts}}
               if starts is not None and not ensemble else {}),
            **({"ensemble": list(starts)} if ensemble else {})}
