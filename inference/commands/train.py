"""Train a genotype from scratch (the DARTS evaluation network) and report its accuracy.

Usage::

    # size only (DARTS counts parameters without the auxiliary head)
    python scripts/train_genotype.py --genotype DARTS_V2 --init-channels 36 --layers 20 \\
        --auxiliary --params-only
    # params_M: 3.349342
    # macs_M: 528.4

    # train what `pyro-base adapt` found, on the same task (the recipe follows the image
    # size: cpu for 16x16), then resume after a crash
    python scripts/adapt.py --prior runs/meta --family motif --task-seed 3 --out runs/adapt
    python scripts/train_genotype.py --genotype runs/adapt --task-source procedural \\
        --family motif --task-seed 3 --run-dir runs/eval
    python scripts/train_genotype.py ... --run-dir runs/eval --resume

    # the DARTS CIFAR-10 recipe (600 epochs, C=36, 20 cells, auxiliary, cutout)
    python scripts/train_genotype.py --genotype DARTS_V2 --task-source cifar10 \\
        --data-dir data/ --preset darts --device cuda --run-dir runs/darts_v2

``--genotype`` takes a published name (DARTS_V2, NASNet-A, BASE_CIFAR, ...), a genotype JSON
file, an adaptation directory (its ``genotype.json``), or a run directory (its
``prior_genotype.json``, or ``genotypes/<NAME>.json`` with ``--task-genotype NAME``). Every
:class:`pyro_base.inference.evaluate.train_config.TrainConfig` field is a flag (``--batch-size``,
``--cutout``, ``--no-auxiliary``, ...) and a key of ``--config FILE`` (YAML), overriding
``--preset`` (flags override the file); ``--seed`` seeds the training, ``--task-seed`` picks the
task. A summary (``key: value`` lines) is printed; ``--run-dir`` keeps it with the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from pyro_base.cli import add_common_arguments, add_config_arguments, add_task_arguments
    from pyro_base.inference.evaluate.train_config import TrainConfig

    p = argparse.ArgumentParser(
        description="Train the DARTS evaluation network of a genotype from scratch on a task "
                    "and report test accuracy, parameters and MACs (or only the size, with "
                    "--params-only).",
    )
    p.add_argument("--genotype", required=True,
                   help="published genotype name (e.g. DARTS_V2, NASNet-A, BASE_CIFAR), a "
                        "genotype JSON file, or a run directory")
    p.add_argument("--task-genotype", default=None,
                   help="with a run directory: use genotypes/<NAME>.json")
    p.add_argument("--preset", choices=("cpu", "darts"), default=None,
                   help="training recipe the flags below override (default: from the task's "
                        "image size, cpu up to 16x16, else darts; darts with --params-only)")
    p.add_argument("--run-dir", default=None, help="checkpoint and eval.json go here")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    p.add_argument("--params-only", action="store_true",
                   help="print params_M (auxiliary head excluded, as DARTS) and macs_M; exit")
    p.add_argument("--input-size", type=int, default=32,
                   help="with --params-only: image height = width for the MAC count")
    add_common_arguments(p)
    add_task_arguments(p)
    add_config_arguments(p, TrainConfig, title="training recipe (also the keys of --config FILE)",
                         default_label="darts preset")
    return p


def make_config(args: argparse.Namespace, task=None):  # noqa: ANN001, ANN201
    """``--preset`` (default: from the task's image size), then ``--config``, then the flags."""
    from pyro_base.cli import resolve_config
    from pyro_base.inference.evaluate.train_config import TrainConfig

    if args.preset is None:
        size = task.image_shape[-1] if task is not None else None
        args.preset = "cpu" if size is not None and size <= 16 else "darts"
        logging.getLogger("train").warning(
            "--preset %s (chosen from the task's %s images; pass --preset to override)",
            args.preset, f"{size}x{size}" if size else "unknown")
    return resolve_config(args, TrainConfig)


def report_size(args: argparse.Namespace) -> int:
    from pyro_base.cli import load_genotype
    from pyro_base.inference.evaluate.train import build_network
    from pyro_base.network import count_macs, count_parameters

    cfg = make_config(args)
    net = build_network(load_genotype(args.genotype, task_genotype=args.task_genotype), cfg,
                        n_classes=cfg.n_classes or 10, in_channels=cfg.in_channels or 3)
    print(f"params_M: {count_parameters(net):.6f}")
    print(f"macs_M: {count_macs(net, args.input_size) / 1e6:.1f}")
    return 0


def train(args: argparse.Namespace) -> int:
    from pyro_base.cli import load_genotype, load_task
    from pyro_base.inference.evaluate.train import train_genotype

    genotype = load_genotype(args.genotype, task_genotype=args.task_genotype)
    task = load_task(args)
    cfg = make_config(args, task)
    result = train_genotype(genotype, task, cfg, run_dir=args.run_dir, resume=args.resume,
                            progress=args.progress)
    for key in ("task", "top1", "top5", "test_loss", "params_M", "macs_M", "seconds", "epochs",
                "steps"):
        print(f"{key}: {json.dumps(getattr(result, key))}")
    return 0


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(message)s")
    from pyro_base.training import OutOfMemory

    try:
        if args.params_only:
            return report_size(args)
        return train(args)
    except (ValueError, OutOfMemory) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def cli(argv: Sequence[str] | None = None) -> int:
    return main(build_parser().parse_args(argv))
