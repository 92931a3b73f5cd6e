"""ArviZ ``InferenceData`` of BASE posteriors: layout, genotype frequencies (files: :mod:`.io`).

Layout of :func:`to_inference_data` (``T`` tasks; ``obs`` pools every task's query points)::

    group                 variable     dims                             what
    posterior             z_relaxed    (chain, draw, task, cell, edge, op)  a draw's op weights
                          theta_norm   (chain, draw, task, layer)       ||theta|| per layer (1)
    posterior_predictive  y            (chain, draw, obs)               label drawn per draw
    log_likelihood        y            (chain, draw, obs)               log p(y_n | theta, z)
    observed_data         y            (obs,)                           query labels
    sample_stats          inner_loss   (chain, task, step)              adaptation loss (2)
    prior                 op_probs     (cell, edge, op)                 softmax(alpha) of W
                          z_relaxed    (chain, draw, cell, edge, op)    draws of q = W (3)
                          theta_norm   (chain, draw, layer)             (1)
    constant_data         op_probs     (chain, task, cell, edge, op)    softmax(phi_t) per chain
                          family, n_classes, n_query  (task,)
    attrs                 genotypes (JSON: task -> genotype), prior_genotype (JSON),
                          pyro_base_format, search_space (JSON), search_space_fingerprint, ...

The three ``obs`` groups carry the coordinate ``task`` (obs,), indexed, so
``idata.observed_data.sel(task="a")`` and ``idata.log_likelihood.y.groupby("task")`` work.
Only values that vary across draws are in ``posterior``, so ``az.summary(idata)`` has no
constant entry and, with two or more chains, a finite r_hat for every one; ``op_probs`` is
deterministic given a chain's adapted parameters and so sits in ``constant_data``. The hard op
of a draw is ``z_relaxed.argmax("op")``. (With the ``straight_through`` relaxation
``z_relaxed`` is itself one-hot, and an edge that keeps its op in every draw has no r_hat.)
(1) With a ``delta`` weight posterior ``theta`` is the same in every draw: ``theta_norm`` then
goes to ``constant_data`` as ``(chain, task, layer)``, and to ``prior`` as ``(layer,)``.
(2) The per-datum negative ELBO before each inner step ``1..steps``; NaN where none was
recorded (posteriors given without their losses) or after a loop that stopped early. The group
is absent when no task has losses.
(3) ``prior`` is present when the draws include the ``"prior"`` pseudo-task (``q = W``);
``op_probs`` and a ``delta`` prior's ``theta_norm`` have no ``chain, draw`` dims (they are
not draws): summarize the group with ``var_names=["z_relaxed", "theta_norm"]``.

Every task's query points are concatenated on the one ``obs`` dim, in task order, with no
padding: ``az.loo(idata)`` and ``az.compare({"a": idata_a, "b": idata_b})`` then need no
``var_name`` and sum the pointwise elpd over all tasks. PSIS-LOO weighs each point's column of
draws on its own, so it does not matter that columns of different tasks come from different
posteriors. :func:`select_task` restricts an object to one task's points. The query points are
held out from the adaptation (it sees the support set only), so the plain log pointwise
predictive density is already an out-of-sample estimate; ``az.loo`` is slightly conservative
on top of it, and comparisons between guides or priors rank the same way.
``az.plot_ppc(idata)`` compares the drawn labels with the observed ones, pooled over tasks
(tasks with different class counts share one axis).

Usage::

    idata = to_inference_data(draws)
    save_posterior(idata, run_dir)                       # run_dir / "posterior.nc"
    idata = load_posterior(run_dir / "posterior.nc", space=space)
    recorded_genotypes(idata)["task-0"]                  # the posterior mode's Genotype
    genotype_distribution(idata, top=3)["task-0"]        # [(Genotype, frequency), ...]
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from pyro_base.genotype import Genotype, decode
from pyro_base.inference.posterior.io import (  # noqa: F401  (re-exported)
    FORMAT,
    POSTERIOR_FILE,
    VERSION,
    check_same_space,
    load_posterior,
    save_posterior,
    space_of,
)
from pyro_base.search_space import SearchSpace

with warnings.catch_warnings():   # ArviZ 0.x announces its 1.0 refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

PRIOR = "prior"
"""Name of the pseudo-task whose posterior is ``q = W`` (zero adaptation, no query points)."""
_Z_DIMS = ["task", "cell", "edge", "op"]
_OBS_GROUPS = ("observed_data", "log_likelihood", "posterior_predictive")


@dataclass(frozen=True)
class _Layout:
    """The real tasks of the draws (``keep``: all but a last ``"prior"``), their coordinates."""

    tasks: list[str]
    keep: slice
    has_prior: bool
    n_obs: list[int]
    delta: bool
    base: dict[str, Any]
    coords: dict[str, Any]

    def sampled(self, data: dict[str, np.ndarray], dims: dict[str, list[str]],
                attrs: dict[str, Any] | None = None) -> xr.Dataset:
        """A group of ``(chain, draw, ...)`` arrays on these coordinates."""
        return az.dict_to_dataset(data, coords=self.coords, dims=dims, attrs=attrs, library=None)


def _layout(draws: Any, space: SearchSpace) -> _Layout:
    names = list(draws.tasks)
    has_prior = bool(names) and names[-1] == PRIOR
    keep = slice(0, len(names) - 1) if has_prior else slice(None)
    base = {"chain": np.arange(draws.num_chains), "cell": list(space.cell_types),
            "edge": space.edge_labels(), "op": list(space.ops), "layer": list(draws.layers)}
    return _Layout(tasks=names[keep], keep=keep, has_prior=has_prior,
                   n_obs=[len(y) for y in draws.y[keep]],
                   delta=draws.info.get("weight_posterior") == "delta", base=base,
                   coords={**base, "draw": np.arange(draws.num_draws), "task": names[keep]})


def to_inference_data(draws: Any, *, space: SearchSpace | None = None, rule: str = "base",
                      attrs: dict[str, Any] | None = None) -> az.InferenceData:
    """Build the ``InferenceData`` of :class:`~pyro_base.inference.posterior.draws.PosteriorDraws`
    (layout in the module docstring).

    :param space: the search space of the draws (default ``draws.space``); a different one
        is an error.
    :param rule: genotype decoding rule for the ``genotypes`` and ``prior_genotype`` attributes,
        applied to the mean of ``op_probs`` over chains (``"base"`` or ``"darts"``).
    :param attrs: extra attributes (str / number values), e.g. the run's config name.
    """
    space = check_same_space(space, draws.space)
    lay = _layout(draws, space)
    meta = _attributes(draws, space, lay, rule=rule, attrs=attrs)
    groups: dict[str, xr.Dataset] = {"posterior": _posterior_group(draws, lay, meta),
                                     "constant_data": _constant_group(draws, lay)}
    if sum(lay.n_obs):
        groups.update(_obs_groups(draws, lay))
    stats = _sample_stats_group(draws, lay)
    if stats is not None:
        groups["sample_stats"] = stats
    if lay.has_prior:
        groups["prior"] = _prior_group(draws, lay.coords, lay.delta)
    return az.InferenceData(attrs=dict(meta), **groups)


def _attributes(draws: Any, space: SearchSpace, lay: _Layout, *, rule: str,
                attrs: dict[str, Any] | None) -> dict[str, Any]:
    """``attrs``: format, search space, genotype of the chain-mean ``op_probs``, info."""
    def genotype(probs: np.ndarray) -> dict[str, Any]:
        return decode(dict(zip(space.cell_types, probs, strict=True)), space=space,
                      rule=rule).to_dict()

    mean_probs = draws.op_probs[:, 0].mean(axis=0)            # [task, cell, edge, op]
    genotypes = {t: genotype(p) for t, p in zip(lay.tasks, mean_probs[lay.keep], strict=True)}
    return {"pyro_base_format": FORMAT, "pyro_base_format_version": VERSION,
            "search_space": json.dumps(space.to_dict(), sort_keys=True),
            "search_space_fingerprint": space.fingerprint(), "genotype_rule": rule,
            "genotypes": json.dumps(genotypes),
            **({"prior_genotype": json.dumps(genotype(mean_probs[-1]))} if lay.has_prior
               else {}),
            **{k: v for k, v in draws.info.items() if v is not None}, **(attrs or {})}


def _posterior_group(draws: Any, lay: _Layout, meta: dict[str, Any]) -> xr.Dataset:
    """``z_relaxed`` and (unless the weight posterior is a ``delta``) ``theta_norm``."""
    posterior = {"z_relaxed": draws.z_relaxed[:, :, lay.keep]}
    if not lay.delta:
        posterior["theta_norm"] = draws.theta_norm[:, :, lay.keep]
    return lay.sampled(posterior, {"z_relaxed": _Z_DIMS, "theta_norm": ["task", "layer"]},
                       dict(meta))


def _constant_group(draws: Any, lay: _Layout) -> xr.Dataset:
    """Per chain ``op_probs`` (and a ``delta`` ``theta_norm``); per task family and sizes."""
    keep = lay.keep
    constant = xr.Dataset(
        {"op_probs": (["chain", *_Z_DIMS], draws.op_probs[:, 0, keep]),
         "family": (["task"], np.array(draws.families[keep], dtype=str)),
         "n_classes": (["task"], np.array(draws.n_classes[keep], dtype=np.int64)),
         "n_query": (["task"], np.array(lay.n_obs, dtype=np.int64))},
        coords={**lay.base, "task": lay.tasks})
    if lay.delta:
        constant["theta_norm"] = (["chain", "task", "layer"], draws.theta_norm[:, 0, keep])
    return constant


def _obs_groups(draws: Any, lay: _Layout) -> dict[str, xr.Dataset]:
    """The three groups on the pooled ``obs`` dim, with its indexed ``task`` coordinate."""
    keep, n_obs = lay.keep, lay.n_obs
    obs = {"obs": np.arange(sum(n_obs)), "task": ("obs", np.repeat(np.array(lay.tasks, str),
                                                                   n_obs))}
    y = np.concatenate(draws.y[keep])
    ll = np.concatenate(draws.log_lik[keep], axis=-1)
    pred = np.concatenate(draws.y_pred[keep], axis=-1)
    groups = {"log_likelihood": lay.sampled({"y": ll}, {"y": ["obs"]}),
              "posterior_predictive": lay.sampled({"y": pred}, {"y": ["obs"]}),
              "observed_data": xr.Dataset({"y": (["obs"], y)})}
    for g in _OBS_GROUPS:
        groups[g] = groups[g].assign_coords(obs).set_xindex("task")
    return groups


def _sample_stats_group(draws: Any, lay: _Layout) -> xr.Dataset | None:
    """The inner-loop losses, ``None`` when no task recorded any."""
    losses = draws.inner_loss[:, lay.keep]
    if not (losses.size and np.isfinite(losses).any()):
        return None
    return xr.Dataset({"inner_loss": (["chain", "task", "step"], losses)},
                      coords={"chain": lay.base["chain"], "task": lay.tasks,
                              "step": np.arange(1, losses.shape[-1] + 1)})


def _prior_group(draws: Any, coords: dict[str, Any], delta: bool) -> xr.Dataset:
    """The ``"prior"`` pseudo-task (the last task of ``draws``) as the ``prior`` group."""
    data = {"z_relaxed": draws.z_relaxed[:, :, -1]}
    if not delta:
        data["theta_norm"] = draws.theta_norm[:, :, -1]
    ds = az.dict_to_dataset(data, coords=coords, library=None,
                            dims={"z_relaxed": _Z_DIMS[1:], "theta_norm": ["layer"]})
    ds["op_probs"] = (_Z_DIMS[1:], draws.op_probs[0, 0, -1])
    if delta:
        ds["theta_norm"] = (["layer"], draws.theta_norm[0, 0, -1])
    return ds


def recorded_genotypes(idata: az.InferenceData) -> dict[str, Genotype]:
    """The posterior mode's genotype of every task (from the ``genotypes`` attribute), and of
    the prior ``q = W`` under ``"prior"`` when recorded."""
    attrs = idata.posterior.attrs
    if "genotypes" not in attrs:
        raise ValueError("this InferenceData records no genotypes attribute")
    out = {t: Genotype.from_dict(g) for t, g in json.loads(attrs["genotypes"]).items()}
    if "prior_genotype" in attrs:
        out[PRIOR] = Genotype.from_dict(json.loads(attrs["prior_genotype"]))
    return out


def select_task(idata: az.InferenceData, task: str) -> az.InferenceData:
    """The part of ``idata`` that belongs to ``task``: its ``task`` entry and query points
    (the ``prior`` group, shared by every task, is kept)."""
    tasks = [str(t) for t in idata.posterior["task"].values]
    if task not in tasks:
        raise ValueError(f"task {task!r} is not in this posterior; tasks: {tasks}")
    groups = {}
    for name in idata.groups():
        ds = idata[name]
        if "obs" in ds.dims:
            ds = ds.isel(obs=np.flatnonzero(ds["task"].values.astype(str) == task))
        elif "task" in ds.dims:
            ds = ds.sel(task=[task])
        groups[name] = ds
    return az.InferenceData(attrs=dict(idata.attrs), **groups)


def _z_arrays(data: Any) -> tuple[SearchSpace, list[str], np.ndarray, np.ndarray]:
    """``(space, tasks, z_hard, z_relaxed)``, ``[chain, draw, task, cell, edge, op]``; the
    ``prior`` group of an ``InferenceData`` is the last task, ``"prior"``."""
    if not isinstance(data, az.InferenceData):
        return data.space, list(data.tasks), data.z_hard, data.z_relaxed
    order = ["chain", "draw", *_Z_DIMS]
    tasks = [str(t) for t in data.posterior["task"].values]
    relaxed = data.posterior["z_relaxed"].transpose(*order).values
    if "prior" in data.groups():
        prior = data.prior["z_relaxed"].transpose(*order[:2], *order[3:]).values
        if prior.shape[:2] != relaxed.shape[:2]:
            raise ValueError(f"the prior group has {prior.shape[:2]} (chain, draw), the "
                             f"posterior {relaxed.shape[:2]}")
        relaxed = np.concatenate([relaxed, prior[:, :, None]], axis=2)
        tasks.append(PRIOR)
    hard = (relaxed.argmax(-1)[..., None] == np.arange(relaxed.shape[-1])).astype(np.int8)
    return space_of(data), tasks, hard, relaxed


def genotype_distribution(data: Any, *, top: int = 5, source: str = "hard",
                          rule: str = "base") -> dict[str, list[tuple[Genotype, float]]]:
    """The ``top`` most frequent genotypes among each task's draws, with their frequencies.

    Every draw is decoded with ``rule``. ``source="hard"`` decodes the hard draw: each edge
    keeps its argmax op, and the edges into a node are ranked by that op's relaxed weight (a
    one-hot table alone ties every edge of a node). ``source="relaxed"`` decodes the relaxed
    weights themselves.

    :param data: an ``InferenceData`` from :func:`to_inference_data` or ``PosteriorDraws``.
    :returns: ``{task: [(genotype, frequency), ...]}``, most frequent first.
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    if source not in ("hard", "relaxed"):
        raise ValueError(f"source must be 'hard' or 'relaxed', got {source!r}")
    space, tasks, hard, relaxed = _z_arrays(data)
    tables = relaxed * hard if source == "hard" else relaxed
    tables = tables.reshape(-1, *tables.shape[2:])           # (chain * draw, task, ...)
    out: dict[str, list[tuple[Genotype, float]]] = {}
    for t, task in enumerate(tasks):
        counts = Counter(
            decode(dict(zip(space.cell_types, tables[s, t], strict=True)), space=space,
                   rule=rule).to_json()
            for s in range(tables.shape[0]))
        out[task] = [(Genotype.from_json(g), n / tables.shape[0])
                     for g, n in counts.most_common(top)]
    return out
