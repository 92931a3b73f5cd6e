"""Paired held-out evaluation of a finished meta-training run: meta-trained W against W_0.

Usage::

    python scripts/evaluate.py runs/my_run                      # 20 tasks per family
    python scripts/evaluate.py runs/my_run --tasks-per-family 5 --steps 0 10 20 --progress
    python scripts/evaluate.py runs/my_run --workers 4 --arms meta untrained

Adapts every arm (meta-trained ``W``, the untrained ``W_0``, and the meta-trained weights with
uniform architecture logits) to the same held-out tasks with the same seeds, writes
``RUN_DIR/evaluation/evaluation.json`` and ``curves.png``, and prints a markdown summary
(mean query accuracy per arm, paired gains with 95% bootstrap intervals). See
:mod:`pyro_base.inference.evaluate.paired`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

# pyro_base.inference.evaluate.paired.ARMS
ARMS = ("meta", "untrained", "meta_weights_uniform_arch")


def build_parser() -> argparse.ArgumentParser:
    from pyro_base.cli import add_common_arguments

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="run directory of scripts/meta_svi.py (config.yaml, checkpoint.pt)")
    p.add_argument("--tasks-per-family", type=int, default=20,
                   help="held-out (test split) tasks per task family")
    p.add_argument("--steps", type=int, nargs="+", default=[0, 5, 10, 20, 40, 80],
                   help="adaptation step counts at which query accuracy is read")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS),
                   help="starting W to adapt: the meta-trained W, W_0, and the meta-trained "
                        "weights with W_0's uniform architecture logits")
    p.add_argument("--workers", type=int, default=1,
                   help="processes evaluating the (family, task) units; each of the N "
                        "processes uses one torch thread (as does a single process here), and "
                        "the results equal a single process's exactly")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the inner loops, predictive draws and bootstrap")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples of tasks")
    add_common_arguments(p, config_file=False)
    return p


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    import torch  # not for --help

    from pyro_base.checkpoint import CheckpointError
    from pyro_base.inference.evaluate.paired import evaluate_run, format_summary

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in every worker: --workers N gives the same floats as 1
    try:
        result = evaluate_run(args.run_dir, tasks_per_family=args.tasks_per_family,
                              steps=args.steps, arms=args.arms, device=args.device,
                              seed=args.seed, n_boot=args.n_boot, progress=args.progress,
                              workers=args.workers)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)
    print(format_summary(result))
    print(f"\nwrote {result.path} ({result.seconds:.0f} s)")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run; bad input returns 2 with one ``error:`` line on stderr."""
    return main(build_parser().parse_args(argv))
