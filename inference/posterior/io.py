"""The posterior file: format markers, the recorded search space, atomic save and checked load.

An ``InferenceData`` built by :func:`~pyro_base.inference.posterior.inference_data.
to_inference_data` carries ``pyro_base_format`` (:data:`FORMAT`), ``pyro_base_format_version``
(:data:`VERSION`) and its ``search_space`` (JSON) in the ``attrs`` of its ``posterior`` group.
:func:`save_posterior` refuses anything else and writes netCDF atomically;
:func:`load_posterior` checks all three (naming the file and, for a search space mismatch, the
differing fields) and indexes the ``task`` coordinate of the ``obs`` groups again.

Usage::

    path = save_posterior(idata, run_dir)                # run_dir / "posterior.nc"
    idata = load_posterior(path, space=space)            # ValueError on a foreign file
    space_of(idata)                                      # the recorded SearchSpace
    check_same_space(space, space_of(idata), where=str(path))
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

from pyro_base.search_space import SearchSpace

with warnings.catch_warnings():   # ArviZ 0.x announces its 1.0 refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

__all__ = ["FORMAT", "POSTERIOR_FILE", "VERSION", "check_same_space", "load_posterior",
           "save_posterior", "space_of"]

FORMAT = "pyro-base-posterior"
VERSION = 2
POSTERIOR_FILE = "posterior.nc"


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
    that is not a pyro-base posterior, has another layout version (``VERSION``), or whose
    search space differs from ``space`` (the differing fields are listed). The ``task``
    coordinate of the ``obs`` groups is indexed again (netCDF does not store the index).
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
    _check_format(idata, path)
    if space is not None:
        check_same_space(space, space_of(idata), where=str(path))
    return _index_obs_task(idata)


def _check_format(idata: az.InferenceData, path: Path) -> None:
    """Raise a ValueError naming ``path`` unless ``idata`` is a pyro-base posterior of this
    layout version."""
    groups = idata.groups()
    if "posterior" not in groups or idata.posterior.attrs.get("pyro_base_format") != FORMAT:
        raise ValueError(f"{path} is not a pyro-base posterior file (groups {groups}; no "
                         f"posterior attribute pyro_base_format={FORMAT!r})")
    version = idata.posterior.attrs.get("pyro_base_format_version")
    if version != VERSION:
        raise ValueError(f"{path} has posterior layout version {version}; this pyro-base reads "
                         f"version {VERSION}: write it again with save_posterior")


def _index_obs_task(idata: az.InferenceData) -> az.InferenceData:
    """Index the ``task`` coordinate of the ``obs`` groups (netCDF keeps the coordinate, not
    its index), so that ``.sel(task=...)`` works after a round trip."""
    groups = {}
    for name in idata.groups():
        ds = idata[name]
        if "task" in ds.coords and ds["task"].dims == ("obs",) and "task" not in ds.xindexes:
            ds = ds.set_xindex("task")
        groups[name] = ds
    return az.InferenceData(attrs=dict(idata.attrs), **groups)


def space_of(idata: az.InferenceData) -> SearchSpace:
    """The search space recorded in the ``attrs`` of ``idata``."""
    text = idata.posterior.attrs.get("search_space")
    if text is None:
        raise ValueError("this InferenceData records no search_space attribute")
    return SearchSpace.from_dict(json.loads(text))


def check_same_space(given: SearchSpace | None, recorded: SearchSpace,
                     where: str = "the draws") -> SearchSpace:
    """``recorded`` when ``given`` is ``None`` or has its fingerprint; else a ValueError that
    names ``where`` and lists the differing fields."""
    if given is None or given.fingerprint() == recorded.fingerprint():
        return recorded
    a, b = given.to_dict(), recorded.to_dict()
    diff = "; ".join(f"{k}: {b.get(k)!r} there, {a.get(k)!r} given"
                     for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
    raise ValueError(f"search space mismatch for {where}: fingerprint {recorded.fingerprint()} "
                     f"there, {given.fingerprint()} given ({diff})")
