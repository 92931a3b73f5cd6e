"""Draw every picture of a meta-training run: op heatmaps, forest plots, cells, curves.

Usage::

    python scripts/plot_posterior.py runs/omniglot                 # -> runs/omniglot/plots/
    python scripts/plot_posterior.py runs/omniglot --out figs --format svg

Reads ``RUN_DIR/posterior.nc`` (written by ``pyro_base.inference.posterior.draws.save_posterior``),
``RUN_DIR/metrics.jsonl`` and, where present, ``RUN_DIR/genotypes/<task>.json`` and
``RUN_DIR/prior_genotype.json`` (otherwise the genotypes recorded in the posterior's
attributes), and writes, per task of the posterior (and the prior group, when present)::

    heatmap_<task>.<fmt>            edge x op probabilities, one panel per cell type
    cell_<task>_<normal|reduce>.<fmt>  the genotype's cell diagrams
    forest_<cell>.<fmt>             op probabilities across tasks, per cell type
    curves.<fmt>                    loss, inner losses, entropy/temperature, query accuracy

then prints the list of files.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("plot_posterior")


def build_parser() -> argparse.ArgumentParser:
    from pyro_base.cli import add_common_arguments

    p = argparse.ArgumentParser(
        description="Write the posterior and training plots of a run directory (posterior.nc, "
                    "metrics.jsonl, genotypes/) and list the files.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory of scripts/meta_svi.py")
    p.add_argument("--out", default=None, help="output folder (default: RUN_DIR/plots)")
    p.add_argument("--format", choices=("png", "svg"), default="png", help="image format")
    p.add_argument("--dpi", type=int, default=120, help="resolution of PNG images")
    add_common_arguments(p, config_file=False)
    return p


def _safe(name: str) -> str:
    """A file-name-safe version of a task name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "task"


def write_plots(run_dir: Path, out: Path, fmt: str, dpi: int) -> list[Path]:
    from pyro_base.inference.posterior.draws import load_posterior, load_run, recorded_genotypes
    from pyro_base.inference.report.plots import (
        plot_genotype,
        plot_metrics,
        plot_op_forest,
        plot_op_heatmap,
    )

    run = load_run(run_dir, require=("posterior.nc", "metrics.jsonl"))
    idata = load_posterior(run.posterior)
    recorded = recorded_genotypes(idata)
    tasks = list(recorded)
    saved = run.genotypes()
    prior = run.prior_genotype()
    files: list[Path] = []
    for task in tasks:
        files.append(plot_op_heatmap(idata, out / f"heatmap_{_safe(task)}.{fmt}", task=task,
                                     dpi=dpi))
        if task == "prior" and prior is not None:
            genotype = prior
        else:
            genotype = saved.get(task) or recorded[task]
        for cell in ("normal", "reduce"):
            files.append(plot_genotype(genotype, out / f"cell_{_safe(task)}_{cell}.{fmt}",
                                       cell=cell, title=f"{task}: {cell} cell", dpi=dpi))
    for cell in (str(c) for c in idata.posterior["cell"].values):
        files.append(plot_op_forest(idata, out / f"forest_{cell}.{fmt}", cell=cell, dpi=dpi))
    files.append(plot_metrics(run, out / f"curves.{fmt}", dpi=dpi))
    log.info("wrote %d files to %s", len(files), out)
    return files


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(message)s")
    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else run_dir / "plots"
    try:
        files = write_plots(run_dir, out, args.format, args.dpi)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for f in files:
        print(f)
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return main(build_parser().parse_args(argv))
