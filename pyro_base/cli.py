"""Command-line plumbing shared by the scripts: config flags, task sources, genotype specs.

* :func:`add_config_arguments` turns every field of a frozen config dataclass into a kebab-case
  flag (help from the field's ``metadata["help"]``; bools get ``--x/--no-x``); only flags the
  user gives reach :func:`config_overrides`, so presets fill in the rest.
* :func:`add_task_arguments` / :func:`load_task`: one task from ``--task-source``: procedural
  and digits tasks by ``--seed``/``--task-split`` (digits: scikit-learn's, 5-way class
  subsets); idx, cifar10, imagenet_ds, folder, npz give the whole data set as one task
  (support = train files, query = test files); nothing is downloaded.
* :func:`load_genotype`: a published name, a genotype JSON, or a run directory.

Usage::

    p = argparse.ArgumentParser()
    add_task_arguments(p)
    add_config_arguments(p, TrainConfig, rename={"seed": "train-seed"})
    args = p.parse_args()
    cfg = TrainConfig.preset("cpu", **config_overrides(args, TrainConfig))
    task = load_task(args)
"""

from __future__ import annotations

import argparse
import importlib
import typing
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads with these: imported where used, so --help stays fast
    from pyro_base.genotype import Genotype
    from pyro_base.tasks.base import Task

SPLITS = ("train", "val", "test")  # pyro_base.tasks.base.SPLITS (a test checks they agree)

TASK_SOURCES = ("procedural", "digits", "idx", "cifar10", "imagenet_ds", "folder", "npz")
_MODULES = {"procedural": "procedural", "digits": "digits", "idx": "idx", "cifar10": "cifar",
            "imagenet_ds": "imagenet_ds", "folder": "folder", "npz": "folder"}


def _flag_type(hint: Any) -> type:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args else hint
    return base if base in (bool, int, float, str) else str


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, title: str | None = None,
                         rename: Mapping[str, str] | None = None) -> None:
    """One flag per dataclass field of ``cls``; absent flags are left out of the namespace."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(title or cls.__name__)
    rename = dict(rename or {})
    for f in fields(cls):
        flag = "--" + rename.get(f.name, f.name.replace("_", "-"))
        kind = _flag_type(hints[f.name])
        text = f"{f.metadata.get('help', f.name)} (default from the preset: {f.default!r})"
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=text)
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=argparse.SUPPRESS,
                               help=text, metavar=f.name.upper())


def config_overrides(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The config fields the user gave on the command line."""
    given = vars(args)
    return {f.name: given[f.name] for f in fields(cls) if f.name in given}


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("task")
    g.add_argument("--task-source", choices=TASK_SOURCES, default="procedural",
                   help="where the task comes from (default: procedural, embedded)")
    g.add_argument("--data-dir", help="data directory (npz: the .npz file or its directory)")
    g.add_argument("--family", default="motif", help="procedural family (default: motif)")
    g.add_argument("--seed", type=int, default=0, help="procedural/digits task seed (default: 0)")
    g.add_argument("--task-split", choices=SPLITS, default="test",
                   help="procedural/digits split of the task (default: test, held out)")
    g.add_argument("--image-size", type=int, default=None,
                   help="image side (procedural default 16; disk sources: resize to it)")
    g.add_argument("--n-support", type=int, default=200,
                   help="procedural/digits training images")
    g.add_argument("--n-query", type=int, default=200, help="procedural/digits test images")
    g.add_argument("--variant", default=None, help="idx: mnist, fashion_mnist or kmnist")


def load_task(args: argparse.Namespace) -> Task:
    """The task named by :func:`add_task_arguments` flags."""
    from pyro_base.tasks.base import get_task_distribution

    source = args.task_source
    if source not in TASK_SOURCES:
        raise ValueError(f"unknown task source {source!r}; expected one of {TASK_SOURCES}")
    if source not in ("procedural", "digits", "idx") and getattr(args, "data_dir", None) is None:
        raise ValueError(f"--task-source {source} needs --data-dir (nothing is downloaded)")
    importlib.import_module(f"pyro_base.tasks.{_MODULES[source]}")  # registers the source
    size = args.image_size or 16
    if source == "procedural":
        dist = get_task_distribution("procedural", families=(args.family,), image_size=size,
                                     n_support=args.n_support, n_query=args.n_query)
        return dist.task(args.family, args.seed, args.task_split)
    if source == "digits":
        dist = get_task_distribution("digits", image_size=size, n_support=args.n_support,
                                     n_query=args.n_query)
        return dist.task(args.seed, args.task_split)
    opts: dict[str, Any] = dict(image_size=args.image_size, n_classes=None, n_support=None,
                                n_query=1)
    if source == "npz":
        opts["path"] = args.data_dir
    elif args.data_dir is not None:
        opts["data_dir"] = args.data_dir
    if source == "idx" and args.variant:
        opts["variant"] = args.variant
    return get_task_distribution(source, **opts).whole_task()


def load_genotype(spec: str, *, task_genotype: str | None = None) -> Genotype:
    """A published name, a genotype JSON file, or a run directory: ``RUN_DIR/prior_genotype.json``
    or, with ``task_genotype``, ``RUN_DIR/genotypes/<task_genotype>[.json]``."""
    from pyro_base.genotype import Genotype, get_genotype

    path = Path(spec)
    if path.is_dir():
        if task_genotype is None:
            target = path / "prior_genotype.json"
        else:
            folder = path / "genotypes"
            options = [folder / task_genotype, folder / f"{task_genotype}.json"]
            target = next((p for p in options if p.is_file()), options[-1])
            if not target.is_file():
                have = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
                raise ValueError(f"run directory {spec!r} has no genotype {task_genotype!r} in "
                                 f"genotypes/; available: {have}")
        if not target.is_file():
            raise ValueError(f"run directory {spec!r} has no {target.name}")
        path = target
    elif task_genotype is not None:
        raise ValueError(f"--task-genotype needs --genotype to be a run directory, got {spec!r}")
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise ValueError(f"genotype file {spec!r} does not exist")
        try:
            return Genotype.load(path)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
    return get_genotype(spec)
