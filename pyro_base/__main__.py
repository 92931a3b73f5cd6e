"""``pyro-base COMMAND [flags]`` (also ``python -m pyro_base``): every job of pyro-base.

``pyro-base --help`` lists the commands without importing torch or Pyro; each command's own
``--help`` lists its flags. ``scripts/*.py`` are the same commands as files.

Usage::

    pyro-base meta-svi                       # the main job (= python scripts/meta_svi.py)
    pyro-base adapt --prior runs/meta_svi-... --family motif --out runs/adapt
    pyro-base evaluate runs/meta_svi-...     # paired held-out evaluation of a run
    pyro-base train --help
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# command -> (module under pyro_base.inference.commands, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "meta-svi": ("meta_svi", "meta-train BASE across tasks, then adapt to held-out tasks"),
    "adapt": ("adapt", "adapt a saved meta-prior to a task: posterior, cell, curve, cost"),
    "evaluate": ("evaluate", "paired held-out evaluation of a meta-training run"),
    "agreement": ("agreement", "where a run's meta-step disagreement comes from: seeds, "
                               "tasks, families"),
    "search": ("search", "architecture search on one task (BASE, DARTS, SNAS, random)"),
    "train": ("train", "train a genotype from scratch and report its accuracy"),
    "plot": ("plot", "draw the posterior and training plots of a run directory"),
    "experiment": ("experiment", "meta-prior adaptation vs. search from scratch, measured"),
    "bench": ("bench", "time the meta-training step against an eager reference"),
    "fuzz": ("fuzz", "generated bad inputs: only the project's clean errors may come out"),
}


def usage() -> str:
    from pyro_base import __version__

    width = max(map(len, COMMANDS))
    lines = [f"usage: pyro-base COMMAND [flags]   (pyro-base {__version__})", "",
             "BASE, Bayesian meta-Architecture SEarch, as a Pyro probabilistic program.", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "pyro-base COMMAND --help lists the flags of a command."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``argv`` (default ``sys.argv[1:]``) to a command's ``cli``; its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        from pyro_base import __version__

        print(f"pyro-base {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"{usage()}\n\npyro-base: error: unknown command {name!r} "
              f"(choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module = importlib.import_module(f"pyro_base.inference.commands.{COMMANDS[name][0]}")
    sys.argv[0] = f"pyro-base {name}"  # argparse's prog in usage and error lines
    return int(module.cli(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
