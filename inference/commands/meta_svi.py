"""Meta-train BASE across tasks, then adapt to held-out tasks (the main job).

With no arguments: meta-trains on the embedded procedural task families (CPU preset), refits
the architecture prior, adapts to one held-out task per family, and prints, per task, the query
accuracy after adaptation from the start ``adapt``'s default rule chooses (and which), from the
whole meta-prior and, for the same number of steps, from the untrained start, with the default
start's adapted genotype. Everything is written to a run directory (see README, "Commands").

    python scripts/meta_svi.py                                   # defaults, 4-5 min on 2 cores
    python scripts/meta_svi.py --config run.yaml --steps 100     # flags override the file
    python scripts/meta_svi.py --resume runs/meta_svi-20261130-0100  # continue a run
    torchrun --nproc-per-node 2 scripts/meta_svi.py --tasks-per-step 8

Before anything is allocated the supernet's memory is estimated (``pyro_base.memory``) and the
run refuses to start if it cannot fit the device (``--no-memory-check`` to skip). Under
``torchrun`` every rank checks after each meta-step that it holds the same ``W`` as the others.
Bad input (config, flags, ``--resume`` of a bad directory or checkpoint, memory) exits with
code 2 and a one-line ``error:`` message; a non-finite loss under ``--nan-policy stop`` exits 1.

Fault injection for tests: ``PYRO_BASE_FAIL_AT=RANK:STEP`` makes rank RANK raise while
sampling the tasks of meta-step STEP (as a failing data source would), before that step's
all-reduce. Read here only; the library never looks at it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyro_base.cli import add_common_arguments, add_config_arguments
from pyro_base.inference.run.config import ConfigError, MetaConfig
from pyro_base.inference.run.runlog import CONFIG

if TYPE_CHECKING:
    from pyro_base.inference.vi.meta_svi import MetaSVI

log = logging.getLogger("meta_svi")
FAIL_AT_ENV = "PYRO_BASE_FAIL_AT"

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    add_common_arguments(p)
    p.add_argument("--run-dir", type=Path, help="output directory (default runs/meta_svi-TIME)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--no-memory-check", action="store_true",
                   help="skip the memory estimate against the device's free memory")
    add_config_arguments(p, MetaConfig, title="settings (also the keys of --config FILE)")
    return p


def resolve_config(args: argparse.Namespace) -> MetaConfig:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(MetaConfig)
                 if hasattr(args, f.name)}
    if getattr(args, "resume", None) is not None:
        path = args.resume / CONFIG
        if not path.is_file():
            raise ConfigError(f"--resume {args.resume}: no {CONFIG} there; is it a run "
                              "directory written by scripts/meta_svi.py?")
        return MetaConfig.from_run_file(path, **overrides)
    if args.config is not None:
        return MetaConfig.from_yaml(args.config, **overrides)
    try:
        return MetaConfig(**overrides)
    except ConfigError as e:
        raise ConfigError(f"command line: {e}") from None


class FaultyTasks:
    """Test hook (``PYRO_BASE_FAIL_AT=RANK:STEP``): rank RANK fails sampling step STEP."""

    def __init__(self, inner: Any, svi: MetaSVI, rank: int, spec: str) -> None:
        try:
            self.fail_rank, self.fail_step = (int(v) for v in spec.split(":"))
        except ValueError:
            raise ConfigError(f"{FAIL_AT_ENV} must be RANK:STEP, got {spec!r}") from None
        self.inner, self.svi, self.rank = inner, svi, rank

    def sample(self, split: str, rng: Any) -> Any:
        if (self.rank, self.svi.step_count) == (self.fail_rank, self.fail_step):
            raise RuntimeError(f"injected fault ({FAIL_AT_ENV}) on rank {self.rank} while "
                               f"sampling the tasks of meta-step {self.fail_step}")
        return self.inner.sample(split, rng)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def main(args: argparse.Namespace) -> int:
    # torch and Pyro load here, not at import: ``--help`` stays fast
    from pyro_base.inference.run.heldout import format_table, genotype_summary, heldout_report
    from pyro_base.inference.run.job import meta_train_run
    from pyro_base.inference.run.runlog import PRIOR_GENOTYPE

    cfg = resolve_config(args)
    resume = getattr(args, "resume", None)
    run_path = resume or getattr(args, "run_dir", None) or Path(
        "runs") / time.strftime("meta_svi-%Y%m%d-%H%M%S")
    fail_at = os.environ.get(FAIL_AT_ENV)
    result = meta_train_run(
        cfg, run_dir=run_path, resume=resume is not None,
        memory_check=not getattr(args, "no_memory_check", False),
        progress=args.progress, log_level=args.log_level,
        wrap_tasks=(lambda d, svi, rank: FaultyTasks(d, svi, rank, fail_at)) if fail_at else None)
    if result.rank == 0:
        svi, run, space = result.svi, result.run, result.space
        prior = svi.guide.prior_posterior().genotype(space)
        run.write_json(PRIOR_GENOTYPE, prior.to_dict())
        rows = heldout_report(cfg, svi.model, run, device=result.device,
                              distribution=result.distribution,
                              components=None if result.arch_refit is None
                              else result.arch_refit.components)
        if result.arch_refit is not None:
            r = result.arch_refit
            print(f"\narchitecture prior refit to the mean op probabilities of {r.n_good} "
                  f"training tasks adapted for {r.steps} steps (arch_refit.json)")
        print(f"\nmeta-prior genotype: {genotype_summary(prior)}")
        print(f"held-out tasks (a quick look; scripts/evaluate.py RUN_DIR for the paired, "
              f"powered evaluation), query accuracy after {cfg.adapt_steps} adaptation steps "
              "(default = adapt's default, the averaged posteriors of the whole meta-prior, its "
              "architecture prior with the initial weights and the initial weights alone, each "
              "adapted; meta = from the whole meta-prior, as adapt --transfer all; "
              "0-shot = the supernet at W unadapted; untrn = from the untrained start):")
        print(format_table(rows))
        print(f"\nrun directory: {run.path}")
    return 0


def cli(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run; bad input returns 2 with one ``error:`` line on stderr. Under
    torchrun, a rank's uncaught error is recorded as the root cause (``record``)."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:  # not launched by torchrun
        return _cli(argv)
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(_cli)(argv)


def _cli(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # bad flags: argparse's usage message, exit 2
    from pyro_base.checkpoint import CheckpointError
    from pyro_base.inference.vi.meta_svi import NonFiniteLossError
    from pyro_base.memory import InsufficientMemoryError

    try:
        return main(args)
    except (ConfigError, CheckpointError, FileNotFoundError, InsufficientMemoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
