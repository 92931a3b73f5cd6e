r"""Paired held-out evaluation of finished meta-training runs: meta-trained W against W_0.

Usage::

    python scripts/evaluate.py runs/my_run                      # 20 tasks per family
    python scripts/evaluate.py runs/my_run --tasks-per-family 5 --steps 0 10 20 --progress
    python scripts/evaluate.py runs/my_run --workers 4 --arms meta untrained
    # the default adaptation (adapt --transfer select) against the untrained start
    python scripts/evaluate.py runs/my_run --workers 2 --arms untrained select
    # the averaged posteriors of three starts (adapt --transfer ensemble)
    python scripts/evaluate.py runs/my_run --workers 2 --arms untrained select ensemble
    # the 2 x 2 of weights and architecture, with each arm's support-set accuracy
    python scripts/evaluate.py runs/my_run --support-accuracy --arms meta untrained \
        meta_weights_uniform_arch meta_arch_untrained_weights
    # a configuration, not a run: several seeds pooled, and against a baseline configuration
    python scripts/evaluate.py runs/b_s0 runs/b_s1 runs/b_s2 --baseline runs/a_s0 runs/a_s1 \
        runs/a_s2 --reuse --out runs/b_vs_a

Adapts every arm (meta-trained ``W``, the untrained ``W_0``, and the meta-trained weights with
uniform architecture logits; on request also the meta-trained logits with ``W_0``'s weights)
to the same held-out tasks with the same seeds (``--support-accuracy``: reading the support
set's accuracy too; ``select``: per task, the start ``adapt``'s default choice takes for the
run's adaptation budget, adapted once, or read from its arm where that is evaluated;
``ensemble``: the averaged posterior predictives of the starts ``--ensemble-from``, each
adapted with the seeds of its arm, whose own adaptation serves where it is evaluated), writes
``RUN_DIR/evaluation/evaluation.json`` and ``curves.png``, and prints a markdown summary
(mean query accuracy per arm, paired gains with 95% bootstrap intervals). See
:mod:`pyro_base.inference.evaluate.paired`.

Several ``RUN_DIR``\ s (meta-training seeds of one configuration) are evaluated one by one and
pooled: gains over runs x tasks with a two-level bootstrap interval (runs, then tasks).
``--baseline RUN_DIR ...`` (runs of another configuration with the same seeds) adds the paired
difference of the meta-prior's accuracy, candidate minus baseline, per seed and task.
``--reuse`` reads a run's existing ``evaluation/evaluation.json`` instead of evaluating again
when it used the same seed and covers the arms, step counts and tasks asked for; when it
covers only some of them, the arms and tasks it has are taken from it (where its settings and
the run's ``W`` are the same) and only the rest is computed. ``--out DIR``
writes ``pooled.json`` (and ``comparison.json``). See
:mod:`pyro_base.inference.evaluate.pooled`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyro_base import defaults

# pyro_base.inference.evaluate.paired.ARMS and DEFAULT_ARMS
ARMS = ("meta", "untrained", "meta_weights_uniform_arch", "meta_arch_untrained_weights",
        "select", "ensemble")
DEFAULT_ARMS = ARMS[:3]
# pyro_base.inference.evaluate.summary.TRANSFER_ARMS, selection.CRITERIA
TRANSFER_ARMS = {"all": "meta", "none": "untrained", "weights": "meta_weights_uniform_arch",
                 "architecture": "meta_arch_untrained_weights"}
CRITERIA = ("accuracy", "loglik")
EACH = "each"  # pyro_base.inference.evaluate.summary.EACH


def _select_at(text: str) -> int | str:
    """``--select-at``: a step count >= 0 or ``each``."""
    if text == EACH:
        return EACH
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a step count >= 0 or {EACH!r}, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from pyro_base.cli import add_common_arguments

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="+",
                   help="run directory of scripts/meta_svi.py (config.yaml, checkpoint.pt); "
                        "several: runs (seeds) of one configuration, pooled")
    p.add_argument("--baseline", metavar="RUN_DIR", nargs="+", default=None,
                   help="runs of a baseline configuration with the same seeds: the paired "
                        "difference of the meta-prior's accuracy, RUN_DIRs minus these")
    p.add_argument("--reuse", action="store_true",
                   help="read a run's existing evaluation.json when it covers the tasks, arms "
                        "and step counts asked for with the same --seed; when it covers only "
                        "some, take the arms (and tasks) it has from it, compute the rest and "
                        "keep its other arms in the file")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="write pooled.json (several runs) and comparison.json (--baseline)")
    p.add_argument("--tasks-per-family", type=int, default=20,
                   help="held-out (test split) tasks per task family")
    p.add_argument("--steps", type=int, nargs="+", default=[0, 5, 10, 20, 40, 80],
                   help="adaptation step counts at which query accuracy is read")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(DEFAULT_ARMS),
                   help="starting W to adapt: the meta-trained W, W_0, the meta-trained "
                        "weights with W_0's uniform architecture logits, and (on request) the "
                        "meta-trained architecture logits with W_0's weights, and 'select': "
                        "per task, the start of --select-from that scores higher on a "
                        "held-out quarter of its support set, as adapt's default choice "
                        "(with --select-at each, the arms of --select-from are needed), and "
                        "'ensemble': the averaged posteriors of the starts of --ensemble-from, "
                        "as adapt --transfer ensemble")
    p.add_argument("--select-from", nargs="+", choices=(*TRANSFER_ARMS, "components"),
                   default=list(defaults.SELECT_FROM), metavar="START",
                   help="the starts the 'select' arm chooses between, as adapt --transfer "
                        "select --select-from: all (arm meta), none (untrained), architecture "
                        "(meta_arch_untrained_weights), weights (meta_weights_uniform_arch), "
                        "components (one start per family component of the run's architecture "
                        "refit, with W_0's weights; needs one choice, not --select-at each)")
    p.add_argument("--ensemble-from", nargs="+", choices=(*TRANSFER_ARMS, "components"),
                   default=list(defaults.ENSEMBLE_FROM), metavar="START",
                   help="the starts the 'ensemble' arm adapts and averages, named as for "
                        "--select-from")
    p.add_argument("--select-criterion", choices=CRITERIA, default=defaults.SELECT_CRITERION,
                   help="the held-out score the 'select' arm maximises (accuracy, or loglik: "
                        "the mean log predictive density)")
    p.add_argument("--select-at", type=_select_at, default=None, metavar="K|each",
                   help="the step count after which the 'select' arm chooses its start, once "
                        "per task, for its whole curve (default: each run's adapt_steps, the "
                        "budget adapt chooses for); 'each': choose again at every step count "
                        "of --steps (adapts the candidates to the largest)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes evaluating the (family, task) units; each of the N "
                        "processes uses one torch thread (as does a single process here), and "
                        "the results equal a single process's exactly")
    p.add_argument("--support-accuracy", action="store_true",
                   help="also read each arm's accuracy on the support set after each step count "
                        "(a start that fits the support set but not the query set memorises)")
    p.add_argument("--adapt-sharpness", type=float, default=None, metavar="G",
                   help="power of the meta-trained architecture prior the arms adapt from "
                        "(logits times G; default: each run's adapt_sharpness)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the inner loops, predictive draws and bootstrap")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples of tasks")
    add_common_arguments(p, config_file=False)
    return p


def _run_settings(run_dir: str, args: argparse.Namespace) -> tuple[float, int | str]:
    """The architecture prior's power and the select arm's step count the evaluation of
    ``run_dir`` uses (the run's own where the flags leave them)."""
    if args.adapt_sharpness is not None and args.select_at is not None:
        return args.adapt_sharpness, args.select_at
    from pyro_base.inference.run.config import MetaConfig
    from pyro_base.inference.run.runlog import CONFIG
    cfg = MetaConfig.from_run_file(Path(run_dir) / CONFIG)
    return (cfg.adapt_sharpness if args.adapt_sharpness is None else args.adapt_sharpness,
            int(cfg.adapt_steps) if args.select_at is None else args.select_at)


def _covers(data: dict[str, Any], args: argparse.Namespace, sharpness: float = 1.0,
            select_at: int | str = EACH) -> bool:
    """Whether an existing evaluation holds what ``args`` asks for (an evaluation written
    before the sharpness was recorded adapted from the prior itself: power 1)."""
    from pyro_base.inference.evaluate.summary import select_rule

    s = data.get("settings", {})
    counts = [sum(t["family"] == f for t in data.get("tasks", [])) for f in s.get("families", [])]
    return (s.get("seed") == args.seed and set(args.arms) <= set(s.get("arms", []))
            and set(args.steps) <= set(s.get("steps", [])) and bool(counts)
            and min(counts) >= args.tasks_per_family
            and (not args.support_accuracy or bool(s.get("support_accuracy")))
            and s.get("adapt_sharpness", 1.0) == sharpness
            and ("select" not in args.arms
                 or select_rule(s) == (tuple(args.select_from), args.select_criterion,
                                       select_at))
            and ("ensemble" not in args.arms
                 or tuple(s.get("ensemble_from", ())) == tuple(args.ensemble_from)))


def _evaluation(run_dir: str, args: argparse.Namespace) -> dict[str, Any]:
    """One run's evaluation (reused or computed; a computed one's summary is printed),
    restricted to the steps and tasks asked for."""
    from pyro_base.inference.evaluate.paired import evaluate_run, format_summary
    from pyro_base.inference.evaluate.pooled import load_evaluation, restrict

    existing = Path(run_dir) / "evaluation" / "evaluation.json"
    earlier = json.loads(existing.read_text()) if args.reuse and existing.is_file() else None
    if not (earlier and _covers(earlier, args, *_run_settings(run_dir, args))):
        arms = list(args.arms)
        if earlier and earlier.get("settings", {}).get("seed") == args.seed:
            # the earlier arms stay in the file: taken from it where they can be
            arms += [a for a in earlier["settings"].get("arms", []) if a not in arms
                     and a != "select"]
        result = evaluate_run(run_dir, tasks_per_family=args.tasks_per_family,
                              steps=args.steps, arms=arms, device=args.device,
                              seed=args.seed, n_boot=args.n_boot, progress=args.progress,
                              workers=args.workers, support_accuracy=args.support_accuracy,
                              sharpness=args.adapt_sharpness,
                              select_from=args.select_from,
                              select_criterion=args.select_criterion,
                              select_at=args.select_at, ensemble_from=args.ensemble_from,
                              reuse=earlier)
        print(f"## {run_dir}\n\n{format_summary(result)}\n\nwrote {result.path} "
              f"({result.seconds:.0f} s)\n")
    else:
        print(f"## {run_dir}: reusing {existing}\n")
    data = restrict(load_evaluation(run_dir), steps=sorted(set(args.steps)),
                    tasks_per_family=args.tasks_per_family)
    data["settings"]["arms"] = [a for a in data["settings"]["arms"] if a in args.arms]
    return data


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    import torch  # not for --help

    from pyro_base.checkpoint import CheckpointError
    from pyro_base.inference.evaluate.pooled import (
        compare_evaluations,
        format_comparison,
        format_pooled,
        pool_evaluations,
    )

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in every worker: --workers N gives the same floats as 1
    try:
        if args.out is not None and args.out.exists() and not args.out.is_dir():
            raise ValueError(f"--out {args.out} exists and is not a directory")
        runs = [_evaluation(r, args) for r in args.run_dir]
        base = [_evaluation(r, args) for r in args.baseline or []]
        pooled = pool_evaluations(runs, n_boot=args.n_boot, seed=args.seed)
        diff = (compare_evaluations(base, runs, n_boot=args.n_boot, seed=args.seed)
                if base else None)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)
    if len(runs) > 1 or args.reuse:
        print(format_pooled(pooled))
    if diff is not None:
        print("\n" + format_comparison(diff))
    if args.out is not None:
        from pyro_base.inference.run.runlog import RunDir

        out = RunDir(args.out)
        written = [out.write_json("pooled.json", pooled)]
        if diff is not None:
            written.append(out.write_json("comparison.json", diff))
        print("\nwrote " + ", ".join(str(p) for p in written))
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run; bad input returns 2 with one ``error:`` line on stderr."""
    return main(build_parser().parse_args(argv))
