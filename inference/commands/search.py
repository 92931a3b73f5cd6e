"""Search an architecture on one task with BASE (from scratch), DARTS, SNAS or random search.

Usage::

    python scripts/search.py --method darts --task-source procedural --family motif --task-seed 0 \\
        --steps 200 --preset cpu --out darts.json
    # darts.json: the genotype; darts.cost.json: cost (wall seconds, supernet
    # forward-backward passes, images), op probabilities, config, losses

    python scripts/search.py --method random --n-candidates 8 --steps 400 --out random.json
    python scripts/train_genotype.py --genotype darts.json --preset cpu ...   # then evaluate

Every :class:`pyro_base.inference.search.config.SearchConfig` field is a flag (``--batch-size``,
``--arch-lr``, ``--tau-end``, ...) and a key of ``--config FILE`` (YAML), overriding ``--preset``
(flags override the file); ``--seed`` seeds the search, ``--task-seed`` picks the task.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

METHODS = ("base", "darts", "snas", "random")


def build_parser() -> argparse.ArgumentParser:
    from pyro_base.cli import add_common_arguments, add_config_arguments, add_task_arguments
    from pyro_base.inference.search.config import SearchConfig

    p = argparse.ArgumentParser(
        description="Architecture search on one task: BASE from scratch, first-order DARTS, "
                    "SNAS-style or random search; writes the genotype JSON and a cost JSON.")
    p.add_argument("--method", choices=METHODS, required=True, help="search method")
    p.add_argument("--preset", choices=("tiny", "cpu", "darts"), default="cpu",
                   help="search settings the flags below override (default: cpu)")
    p.add_argument("--out", required=True, help="genotype JSON to write")
    p.add_argument("--cost-out", default=None,
                   help="cost JSON (default: the --out path with suffix .cost.json)")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms")
    add_common_arguments(p)
    add_task_arguments(p)
    add_config_arguments(p, SearchConfig, title="search settings (also the keys of --config "
                         "FILE)", default_label="cpu preset")
    return p


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(message)s")
    from pyro_base.cli import load_task, resolve_config
    from pyro_base.inference.search.config import SearchConfig
    from pyro_base.inference.search.methods import run_search
    from pyro_base.training import OutOfMemory

    try:
        config = resolve_config(args, SearchConfig)
        task = load_task(args)
        result = run_search(args.method, task, config, progress=args.progress,
                            deterministic=args.deterministic)
    except (ValueError, OutOfMemory) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    cost_out = Path(args.cost_out) if args.cost_out else out.with_suffix(".cost.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    result.save(out, cost_out)
    print(json.dumps({"method": result.method, "task": result.task, "genotype": str(out),
                      "cost": result.to_dict()["cost"]}, indent=1))
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return main(build_parser().parse_args(argv))
