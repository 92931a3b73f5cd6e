"""Adapt a saved meta-prior (a ``pyro-base meta-svi`` run) to a task: the posterior over
architectures, its most probable cell, the adaptation curve and its cost.

Usage::

    python scripts/adapt.py --prior runs/meta_svi-20261203-1200 --task-source procedural \\
        --family dilated_motif --task-seed 3 --out runs/adapt-dilated
    python scripts/adapt.py --prior RUN --task-source npz --data-dir my.npz --image-size 16 \\
        --steps 40 --out runs/adapt-mine
    python scripts/adapt.py --prior RUN ... --steps 0 --out runs/prior   # the prior's cell
    python scripts/adapt.py --prior RUN ... --transfer architecture --out runs/adapt-arch
    python scripts/adapt.py --prior RUN ... --transfer select --out runs/adapt-sel
    python scripts/adapt.py --prior RUN ... --transfer ensemble --out runs/adapt-ens
    python scripts/train_genotype.py --genotype runs/adapt-mine/genotype.json ...   # then train

The search space, ``W`` and settings come from the run (``config.yaml``, ``checkpoint.pt``);
``--steps``, ``--temperature``, ``--num-samples`` and ``--draws`` default to the run's. Grey
images are repeated to RGB for an RGB prior; a task whose image size, channels or class count
the prior cannot take is refused with one ``error:`` line naming both values (exit 2), as are
a missing or broken run directory, an ``--out`` that is a run directory, and bad data.
Writes ``genotype.json``, ``posterior.nc``, ``curve.json``, ``curve.png`` and ``adapt.json``
(query accuracy, op probabilities, cost in seconds, supernet passes and images) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pyro_base import defaults

# pyro_base.inference.run.adaptation.STARTS, selection.CRITERIA (help must not import torch)
STARTS = ("all", "architecture", "weights", "none", "select", "ensemble")
CRITERIA = ("accuracy", "loglik")

def build_parser() -> argparse.ArgumentParser:
    from pyro_base.cli import add_common_arguments, add_task_arguments

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prior", type=Path, required=True, metavar="RUN_DIR",
                   help="a meta-training run directory (config.yaml, checkpoint.pt)")
    p.add_argument("--out", type=Path, required=True, metavar="ADAPT_DIR",
                   help="the adaptation directory to write")
    p.add_argument("--steps", type=int, default=None,
                   help="inner steps on the task's support set (default: the run's "
                        "adapt_steps; 0: the prior's own cell)")
    p.add_argument("--curve-steps", type=int, nargs="+", default=None,
                   help="step counts at which the query accuracy is recorded (default: 0 5 10 "
                        "20 40 80 up to --steps)")
    p.add_argument("--temperature", type=float, default=None,
                   help="Concrete temperature (default: the run's adapt_temperature)")
    p.add_argument("--num-samples", type=int, default=None,
                   help="predictive draws for the query accuracy (default: the run's)")
    p.add_argument("--draws", type=int, default=None,
                   help="posterior draws in posterior.nc (default: the run's posterior_draws)")
    p.add_argument("--transfer", choices=STARTS, default=defaults.ADAPT_TRANSFER,
                   help="what the task starts from: the averaged posteriors of every start of "
                        "--ensemble-from, each adapted on the whole support set (ensemble, the "
                        "default; one cost per start, 3x with the default three), the whole "
                        "meta-prior (all), its "
                        "architecture logits with the run's initial weights W_0 "
                        "(architecture), its weights with uniform logits (weights), W_0 "
                        "itself (none), or whichever of --select-from scores higher on a "
                        "held-out quarter of the support set after --steps steps (select; "
                        "about 1 + 3/4 x the number of candidates times the cost, 3x with "
                        "two)")
    p.add_argument("--ensemble-from", nargs="+", choices=(*STARTS[:4], "components"),
                   default=list(defaults.ENSEMBLE_FROM), metavar="START",
                   help="the starts --transfer ensemble adapts on the whole support set and "
                        "averages (the mixture of their posteriors), named as for "
                        "--select-from")
    p.add_argument("--select-from", nargs="+", choices=(*STARTS[:4], "components"),
                   default=list(defaults.SELECT_FROM), metavar="START",
                   help="the starts --transfer select chooses between, the preferred first "
                        "(it keeps a tie): two or more of all, architecture, weights, none, "
                        "components (one start per family component of the run's "
                        "architecture refit, with W_0's weights; it may stand alone) "
                        f"(default: {' '.join(defaults.SELECT_FROM)})")
    p.add_argument("--select-criterion", choices=CRITERIA, default=defaults.SELECT_CRITERION,
                   help="the held-out score --transfer select maximises: accuracy, or loglik, "
                        "the mean log predictive density of the held-out labels")
    p.add_argument("--adapt-sharpness", type=float, default=None, metavar="G",
                   help="power of the meta-trained architecture prior the task adapts from "
                        "(logits times G; default: the run's adapt_sharpness)")
    p.add_argument("--seed", type=int, default=0, help="seed of the inner loop and the draws")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    g = p.add_argument_group("few-shot protocol (with --episodes: N-way K-shot episodes of the "
                             "source's held-out classes, each adapted from the prior and scored "
                             "on its query set; writes fewshot.json)")
    g.add_argument("--episodes", type=int, default=None,
                   help="number of episodes (the field reports >= 600)")
    g.add_argument("--n-way", type=int, default=5, help="classes per episode")
    g.add_argument("--k-shot", type=int, default=5, help="support images per class")
    g.add_argument("--query-per-class", type=int, default=15, help="query images per class")
    add_common_arguments(p, config_file=False)
    add_task_arguments(p)
    return p


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    from pyro_base.checkpoint import CheckpointError
    from pyro_base.cli import load_task
    from pyro_base.inference.run.adaptation import adapt_prior

    if args.episodes is not None:
        return fewshot(args)
    try:
        task = load_task(args)
        record = adapt_prior(args.prior, task, out=args.out, steps=args.steps,
                             curve_steps=tuple(args.curve_steps) if args.curve_steps else None,
                             temperature=args.temperature, num_samples=args.num_samples,
                             draws=args.draws, seed=args.seed, device=args.device,
                             transfer=args.transfer, sharpness=args.adapt_sharpness,
                             select_from=args.select_from,
                             select_criterion=args.select_criterion,
                             ensemble_from=args.ensemble_from)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {k: record[k] for k in ("task", "steps", "query_accuracy", "prior_accuracy",
                                      "cost")}
    print(json.dumps({**summary, "out": str(args.out)}, indent=1))
    return 0


def fewshot(args: argparse.Namespace) -> int:
    """The few-shot protocol: mean query accuracy over episodes with its 95% interval."""
    from pyro_base.checkpoint import CheckpointError
    from pyro_base.inference.evaluate.fewshot import episode_source, fewshot_score
    from pyro_base.inference.run.adaptation import checkpoint_components, selection_starts
    from pyro_base.inference.run.factory import load_trained
    from pyro_base.inference.run.runlog import RunDir
    from pyro_base.training import resolve_device

    try:
        select = args.transfer == "select"
        ensemble = args.transfer == "ensemble"
        model, guide, cfg, state = load_trained(args.prior,
                                                device=resolve_device(args.device),
                                                transfer="all" if select or ensemble
                                                else args.transfer,
                                                sharpness=args.adapt_sharpness)
        space = model.space
        source = episode_source(args.task_source, n_way=args.n_way, k_shot=args.k_shot,
                                n_query=args.query_per_class, image_size=space.input_size,
                                channels=space.in_channels, data_dir=args.data_dir,
                                families=None if args.family == "all" else (args.family,))
        if args.n_way > space.n_classes:
            raise ValueError(f"--n-way {args.n_way} exceeds the prior's {space.n_classes} "
                             "outputs")
        report = fewshot_score(model, guide, source, episodes=args.episodes,
                               steps=cfg.adapt_steps if args.steps is None else args.steps,
                               temperature=cfg.adapt_temperature if args.temperature is None
                               else args.temperature,
                               num_samples=cfg.num_samples if args.num_samples is None
                               else args.num_samples,
                               seed=args.seed, split=args.task_split, progress=args.progress,
                               starts=selection_starts(
                                   model, cfg, args.ensemble_from if ensemble
                                   else args.select_from,
                                   components=checkpoint_components(state))
                               if select or ensemble else None,
                               select_criterion=args.select_criterion, ensemble=ensemble)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = {"prior": str(args.prior), "transfer": args.transfer,
              **({"select_from": list(args.select_from),
                  "select_criterion": args.select_criterion} if select else {}),
              **({"ensemble_from": list(args.ensemble_from)} if ensemble else {}),
              "sharpness": cfg.adapt_sharpness, "source": args.task_source, "family": args.family,
              "n_way": args.n_way, "k_shot": args.k_shot,
              "query_per_class": args.query_per_class, **report}
    RunDir(args.out).write_json("fewshot.json", report)
    print(f"{args.n_way}-way {args.k_shot}-shot, {args.episodes} episodes of "
          f"{args.task_source} ({args.task_split}): {100 * report['mean']:.2f}% "
          f"+- {100 * report['ci95']:.2f}% (95% interval), {report['seconds']:.0f} s")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return main(build_parser().parse_args(argv))
