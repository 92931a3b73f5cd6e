"""ArviZ ``InferenceData`` of BASE posteriors: layout, netCDF files, genotype frequencies.

Layout of :func:`to_inference_data` (``T`` tasks, the ``"prior"`` pseudo-task included)::

    posterior         z_relaxed, z_hard, op_probs  (chain, draw, task, cell, edge, op)
                      theta_norm                   (chain, draw, task, layer)
    log_likelihood    y                            (chain, draw, obs)
    observed_data     y                            (obs,)
    constant_data     obs_task                     (obs,)   task of each query point
                      family, n_classes, n_query, genotype (JSON)   (task,)
    attrs             pyro_base_format, search_space (JSON), search_space_fingerprint, ...

Every task's query points are concatenated on the one ``obs`` dim, in task order, with no
padding: ``az.loo(idata)`` and ``az.compare({"a": idata_a, "b": idata_b})`` then need no
``var_name`` and sum the pointwise elpd over all tasks. PSIS-LOO weighs each point's column of
draws on its own, so it does not matter that columns of different tasks come from different
posteriors. :func:`select_task` restricts an object to one task's points. The query points are
held out from the adaptation (it sees the support set only), so the plain log pointwise
predictive density is already an out-of-sample estimate; ``az.loo`` is slightly conservative
on top of it, and comparisons between guides or priors rank the same way.

Usage::

    idata = to_inference_data(draws)
    save_posterior(idata, run_dir)                       # run_dir / "posterior.nc"
    idata = load_posterior(run_dir / "posterior.nc", space=space)
    genotype_distribution(idata, top=3)["task-0"]        # [(Genotype, frequency), ...]
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pyro_base.genotype import Genotype, decode
from pyro_base.search_space import SearchSpace

with warnings.catch_warnings():   # ArviZ 0.x announces its 1.0 refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

FORMAT = "pyro-base-posterior"
VERSION = 1
POSTERIOR_FILE = "posterior.nc"
_Z_DIMS = ["task", "cell", "edge", "op"]


def to_inference_data(draws: Any, *, space: SearchSpace | None = None, rule: str = "base",
                      attrs: dict[str, Any] | None = None) -> az.InferenceData:
    """Build the ``InferenceData`` of :class:`~inference.posterior.PosteriorDraws` (layout in
    the module docstring) with ``az.from_dict``.

    :param space: the search space of the draws (default ``draws.space``); a different one
        is an error.
    :param rule: genotype decoding rule for ``constant_data.genotype``, applied to the mean of
        ``op_probs`` over chains and draws (``"base"`` or ``"darts"``).
    :param attrs: extra attributes (str / number values), e.g. the run's config name.
    """
    space = _check_same_space(space, draws.space)
    n_obs = [len(y) for y in draws.y]
    ll = np.concatenate(draws.log_lik, axis=-1)
    mean_probs = draws.op_probs.mean(axis=(0, 1))
    genotypes = [decode(dict(zip(space.cell_types, p, strict=True)), space=space,
                        rule=rule).to_json() for p in mean_probs]
    coords = {"task": list(draws.tasks), "cell": list(space.cell_types),
              "edge": space.edge_labels(), "op": list(space.ops), "layer": list(draws.layers),
              "obs": np.arange(sum(n_obs))}
    dims = {**{k: _Z_DIMS for k in ("z_relaxed", "z_hard", "op_probs")},
            "theta_norm": ["task", "layer"], "y": ["obs"], "obs_task": ["obs"],
            **{k: ["task"] for k in ("family", "n_classes", "n_query", "genotype")}}
    meta = {"pyro_base_format": FORMAT, "pyro_base_format_version": VERSION,
            "search_space": json.dumps(space.to_dict(), sort_keys=True),
            "search_space_fingerprint": space.fingerprint(), "genotype_rule": rule,
            **{k: v for k, v in draws.info.items() if v is not None}, **(attrs or {})}
    return az.from_dict(
        posterior={"z_relaxed": draws.z_relaxed, "z_hard": draws.z_hard,
                   "op_probs": draws.op_probs, "theta_norm": draws.theta_norm},
        log_likelihood={"y": ll} if sum(n_obs) else None,
        observed_data={"y": np.concatenate(draws.y)} if sum(n_obs) else None,
        constant_data={"obs_task": np.repeat(np.array(draws.tasks, dtype=str), n_obs),
                       "family": np.array(draws.families, dtype=str),
                       "n_classes": np.array(draws.n_classes, dtype=np.int64),
                       "n_query": np.array(n_obs, dtype=np.int64),
                       "genotype": np.array(genotypes, dtype=str)},
        coords=coords, dims=dims, attrs=dict(meta), posterior_attrs=dict(meta))


def select_task(idata: az.InferenceData, task: str) -> az.InferenceData:
    """The part of ``idata`` that belongs to ``task``: its ``task`` entry and query points."""
    tasks = [str(t) for t in idata.posterior["task"].values]
    if task not in tasks:
        raise ValueError(f"task {task!r} is not in this posterior; tasks: {tasks}")
    out = idata.sel(task=[task])
    if "obs_task" in idata.constant_data:
        keep = np.flatnonzero(idata.constant_data["obs_task"].values.astype(str) == task)
        out = out.isel(obs=keep)
    return out


def save_posterior(idata: az.InferenceData, path: str | os.PathLike) -> Path:
    """Write ``idata`` to netCDF atomically; a directory ``path`` gets ``posterior.nc``."""
    path = Path(path)
    if path.is_dir():
        path = path / POSTERIOR_FILE
    if idata.posterior.attrs.get("pyro_base_format") != FORMAT:
        raise ValueError("idata was not built by to_inference_data (its posterior group has no "
                         f"pyro_base_format={FORMAT!r} attribute); refusing to write {path}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        idata.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_posterior(path: str | os.PathLike, *,
                   space: SearchSpace | None = None) -> az.InferenceData:
    """Read a file written by :func:`save_posterior` (a directory: its ``posterior.nc``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for one
    that is not a pyro-base posterior, or whose search space differs from ``space`` (the
    differing fields are listed).
    """
    path = Path(path)
    if path.is_dir():
        path = path / POSTERIOR_FILE
    if not path.is_file():
        raise FileNotFoundError(f"posterior file {path} does not exist")
    try:
        with az.rc_context({"data.load": "eager"}):
            idata = az.from_netcdf(str(path), engine="h5netcdf")
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable netCDF/InferenceData file: {e}") from e
    groups = idata.groups()
    if "posterior" not in groups or idata.posterior.attrs.get("pyro_base_format") != FORMAT:
        raise ValueError(f"{path} is not a pyro-base posterior file (groups {groups}; no "
                         f"posterior attribute pyro_base_format={FORMAT!r})")
    if space is not None:
        _check_same_space(space, space_of(idata), where=str(path))
    return idata


def space_of(idata: az.InferenceData) -> SearchSpace:
    """The search space recorded in the ``attrs`` of ``idata``."""
    text = idata.posterior.attrs.get("search_space")
    if text is None:
        raise ValueError("this InferenceData records no search_space attribute")
    return SearchSpace.from_dict(json.loads(text))


def _check_same_space(given: SearchSpace | None, recorded: SearchSpace,
                      where: str = "the draws") -> SearchSpace:
    if given is None or given.fingerprint() == recorded.fingerprint():
        return recorded
    a, b = given.to_dict(), recorded.to_dict()
    diff = "; ".join(f"{k}: {b.get(k)!r} there, {a.get(k)!r} given"
                     for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
    raise ValueError(f"search space mismatch for {where}: fingerprint {recorded.fingerprint()} "
                     f"there, {given.fingerprint()} given ({diff})")


def _z_arrays(data: Any) -> tuple[SearchSpace, list[str], np.ndarray, np.ndarray]:
    if isinstance(data, az.InferenceData):
        post = data.posterior
        order = ["chain", "draw", *_Z_DIMS]
        return (space_of(data), [str(t) for t in post["task"].values],
                post["z_hard"].transpose(*order).values,
                post["z_relaxed"].transpose(*order).values)
    return data.space, list(data.tasks), data.z_hard, data.z_relaxed


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
