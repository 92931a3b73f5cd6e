"""Where a run's meta-step disagreement comes from: inner-loop seeds, tasks, or families.

Usage::

    python scripts/agreement.py runs/my_run                       # 4 tasks x 3 seeds per family
    python scripts/agreement.py runs/my_run --workers 2           # the same, in 2 processes
    python scripts/agreement.py runs/my_run --tasks-per-family 8 --starts final
    # the same W with another inner loop (no new meta-training): full-batch inner steps
    python scripts/agreement.py runs/my_run --inner inner_batch=96 --out runs/my_run/agree_b96

Adapts each of ``--tasks-per-family`` training tasks of every family ``--seeds`` times from
the run's initial ``W_0`` and from its final ``W`` (its own inner loop and temperature), and
prints, per parameter group, the mean cosine between two tasks' Reptile contributions for
three kinds of pairs (the same task under two seeds, two tasks of one family, two families)
with 95% bootstrap intervals over tasks; ``rho``, the expected cosine of two tasks of a
meta-step; and the tasks per meta-step at which ``metrics.jsonl``'s agreement ``ratio`` would
reach twice its value for independent tasks. Writes ``RUN_DIR/agreement/agreement.json``. See
:mod:`pyro_base.inference.vi.delta_levels`. The contributions are always Reptile's (with the
run's ``arch_update`` and ``weight_update``): for a ``--mode maml`` run, what its inner loop
would add to a Reptile step, not its query gradients.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STARTS = ("initial", "final")  # pyro_base.inference.run.agreement.STARTS, INNER_KEYS
INNER_KEYS = ("inner_steps", "inner_lr", "arch_lr", "inner_optimizer", "inner_beta1",
              "arch_optimizer", "inner_batch", "weight_posterior")


def _setting(text: str) -> tuple[str, Any]:
    """``--inner KEY=VALUE``: a setting of the inner loop, its value read as YAML."""
    from pyro_base.config import load_yaml

    key, sep, value = text.partition("=")
    if not sep or key not in INNER_KEYS:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY one of {INNER_KEYS}, "
                                         f"got {text!r}")
    return key, load_yaml(value)


def build_parser() -> argparse.ArgumentParser:
    from pyro_base.cli import add_common_arguments

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="run directory of scripts/meta_svi.py (config.yaml, checkpoint.pt)")
    p.add_argument("--starts", nargs="+", choices=STARTS, default=list(STARTS),
                   help="the W the tasks adapt from: initial (W_0) and final (the checkpoint's "
                        "W as meta-training left it)")
    p.add_argument("--tasks-per-family", type=int, default=4,
                   help="training tasks per family (>= 2)")
    p.add_argument("--seeds", type=int, default=3, help="inner-loop seeds per task (>= 2)")
    p.add_argument("--inner", type=_setting, nargs="+", default=[], metavar="KEY=VALUE",
                   help="replace a setting of the run's inner loop (the run's config keys: "
                        + ", ".join(INNER_KEYS) + ")")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="folder of agreement.json (none: RUN_DIR/agreement)")
    p.add_argument("--seed", type=int, default=0, help="seed of the inner loops and bootstrap")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples of tasks")
    p.add_argument("--workers", type=int, default=1,
                   help="processes adapting a seed's tasks (CPU only); each of the N processes "
                        "uses one torch thread (as does a single process here), and the "
                        "results equal a single process's exactly")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    add_common_arguments(p, config_file=False)
    return p


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    import torch

    from pyro_base.checkpoint import CheckpointError
    from pyro_base.inference.run.agreement import agreement_levels, format_levels

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in every worker: --workers N gives the same floats as 1
    try:
        result = agreement_levels(args.run_dir, starts=tuple(args.starts),
                                  tasks_per_family=args.tasks_per_family, seeds=args.seeds,
                                  seed=args.seed, n_boot=args.n_boot, device=args.device,
                                  workers=args.workers, progress=args.progress,
                                  inner=dict(args.inner), out=args.out)
    except (ValueError, FileNotFoundError, CheckpointError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)
    print(format_levels(result))
    print(f"\nwrote {result['path']} ({result['seconds']:.0f} s)")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run; bad input returns 2 with one ``error:`` line on stderr."""
    return main(build_parser().parse_args(argv))
