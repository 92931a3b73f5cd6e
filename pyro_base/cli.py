"""Command-line plumbing shared by the scripts: config flags, task sources, genotype specs.

* :func:`add_config_arguments` turns every field of a config dataclass
  (:class:`pyro_base.config.Config`) into a kebab-case flag with its help, choices and default
  (bools get ``--x/--no-x``); only flags the user gives reach :func:`config_overrides`, so
  presets and ``--config`` files fill in the rest. :func:`add_common_arguments`: ``--config``,
  ``--progress/--no-progress``, ``--log-level``, the same in every command.
* :func:`add_task_arguments` / :func:`load_task`: one task from ``--task-source``: procedural
  and digits tasks by ``--task-seed``/``--task-split`` (digits: scikit-learn's, 5-way class
  subsets); the on-disk sources give the whole data set as one task (support = train files,
  query = test files); nothing is downloaded. :data:`TASK_SOURCES` is the one list of sources.
* :func:`resolve_config`: a config from ``--preset``, then ``--config FILE``, then the flags.
* :func:`load_genotype`: a published name, a genotype JSON, an adaptation or a run directory.

Usage::

    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="cpu")
    add_common_arguments(p)
    add_task_arguments(p)
    add_config_arguments(p, TrainConfig)
    args = p.parse_args()
    cfg = resolve_config(args, TrainConfig)       # preset < --config file < flags
    task = load_task(args)
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads with these: imported where used, so --help stays fast
    from pyro_base.genotype import Genotype
    from pyro_base.tasks.base import Task

SPLITS = ("train", "val", "test")  # pyro_base.tasks.base.SPLITS (a test checks they agree)

# every registered task source: the embedded ones, then those read from disk (the one list)
TASK_SOURCES = ("procedural", "digits", "fashion_mnist", "mnist", "kmnist", "idx", "cifar10",
                "cifar100", "imagenet_ds", "folder", "npz", "omniglot", "mini_imagenet")
EPISODE_SOURCES = ("omniglot", "mini_imagenet")  # few-shot sets: class splits, no test files


def _flag_type(hint: Any) -> tuple[type, bool]:
    """The argparse ``type`` of a field's annotation, and whether it takes a list."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args else hint
    if typing.get_origin(base) in (list, tuple):
        item = (typing.get_args(base) or (str,))[0]
        return (item if item in (int, float, str) else str), True
    return (base if base in (bool, int, float, str) else str), False


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, title: str | None = None,
                         default_label: str = "default") -> None:
    """One flag per field of the config dataclass ``cls``: ``--kebab-case`` names, the field's
    help text, its choices and its default in ``--help``; bools get ``--x/--no-x``, lists take
    several values. Absent flags stay out of the namespace (:func:`config_overrides`)."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(title or cls.__name__)
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind, many = _flag_type(hints[f.name])
        text = f"{f.metadata.get('help', f.name.replace('_', ' '))} ({default_label}: {f.default})"
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": text}
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        if f.metadata.get("choices") is not None:
            kw["choices"] = f.metadata["choices"]
        else:
            kw["metavar"] = f.name.upper()
        group.add_argument(flag, type=kind, nargs="+" if many else None, **kw)


def add_common_arguments(parser: argparse.ArgumentParser, *, config_file: bool = True) -> None:
    """The flags every command shares, with one meaning: ``--config FILE`` (YAML settings;
    flags override them), ``--progress/--no-progress`` (tqdm bars) and ``--log-level``."""
    if config_file:
        parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                            help="YAML file of settings (the flags override it)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="tqdm progress bars")
    parser.add_argument("--log-level", default="INFO", type=str.upper,
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="logging level (default: INFO)")


def config_overrides(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The config fields the user gave on the command line."""
    given = vars(args)
    return {f.name: given[f.name] for f in fields(cls) if f.name in given}


def resolve_config(args: argparse.Namespace, cls: Any) -> Any:
    """``cls`` from ``--preset`` (for configs with presets), overridden by the keys of the
    ``--config`` YAML file, overridden by the flags given; errors name the file or the flag."""
    from pyro_base.config import ConfigError, read_settings

    settings = read_settings(args.config, cls) if getattr(args, "config", None) else {}
    settings.update(config_overrides(args, cls))
    source = f"--config {args.config} and flags" if getattr(args, "config", None) else "flags"
    try:
        if callable(getattr(cls, "preset", None)) and getattr(args, "preset", None):
            return cls.preset(args.preset, **settings)
        return cls(**settings)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("task")
    g.add_argument("--task-source", choices=TASK_SOURCES, default="procedural",
                   help="where the task comes from (default: procedural, embedded)")
    g.add_argument("--data-dir", help="data directory (npz: the .npz file or its directory)")
    g.add_argument("--family", default="motif", help="procedural family (default: motif)")
    g.add_argument("--task-seed", type=int, default=0,
                   help="procedural/digits: which task of the family (default: 0)")
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
    if source not in ("procedural", "digits", "idx", "fashion_mnist", "mnist", "kmnist") and \
            getattr(args, "data_dir", None) is None:
        raise ValueError(f"--task-source {source} needs --data-dir (nothing is downloaded)")
    size = args.image_size or 16
    if source == "procedural":
        dist = get_task_distribution("procedural", families=(args.family,), image_size=size,
                                     n_support=args.n_support, n_query=args.n_query)
        return dist.task(args.family, args.task_seed, args.task_split)
    if source == "digits":
        dist = get_task_distribution("digits", image_size=size, n_support=args.n_support,
                                     n_query=args.n_query)
        return dist.task(args.task_seed, args.task_split)
    opts: dict[str, Any] = dict(image_size=args.image_size, n_classes=None, n_support=None,
                                n_query=1)
    if source == "npz":
        opts["path"] = args.data_dir
    elif args.data_dir is not None:
        opts["data_dir"] = args.data_dir
    if source in EPISODE_SOURCES:
        raise ValueError(f"--task-source {source} holds episodes, not one task: use --episodes")
    if source == "idx" and args.variant:
        opts["variant"] = args.variant
    return get_task_distribution(source, **opts).whole_task()


def load_genotype(spec: str, *, task_genotype: str | None = None) -> Genotype:
    """A published name, a genotype JSON file, an adaptation directory (``pyro-base adapt``:
    ``ADAPT_DIR/genotype.json``) or a run directory: ``RUN_DIR/prior_genotype.json`` or, with
    ``task_genotype``, ``RUN_DIR/genotypes/<task_genotype>[.json]``."""
    from pyro_base.genotype import Genotype, get_genotype

    path = Path(spec)
    if path.is_dir():
        if task_genotype is None:
            adapted = path / "genotype.json"
            target = adapted if adapted.is_file() else path / "prior_genotype.json"
        else:
            folder = path / "genotypes"
            options = [folder / task_genotype, folder / f"{task_genotype}.json"]
            target = next((p for p in options if p.is_file()), options[-1])
            if not target.is_file():
                have = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
                raise ValueError(f"run directory {spec!r} has no genotype {task_genotype!r} in "
                                 f"genotypes/; available: {have}")
        if not target.is_file():
            raise ValueError(f"directory {spec!r} has neither genotype.json (an adaptation "
                             f"directory) nor {target.name} (a run directory)")
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
