"""Train a genotype from scratch (the DARTS evaluation network); today: report its size.

Usage::

    python scripts/train_genotype.py --genotype DARTS_V2 --init-channels 36 --layers 20 \\
        --auxiliary --params-only
    # params_M: 3.349342
    # macs_M: 528.4

``--genotype`` takes a published name (DARTS_V2, NASNet-A, BASE_CIFAR, ...; see
``pyro_base.genotype.PUBLISHED_GENOTYPES``) or the path of a JSON file written by
``Genotype.save``. Full training (cutout, drop-path, auxiliary loss, cosine schedule) arrives
with the evaluation pipeline (``inference/evaluate.py``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train_genotype.py",
        description="Build the DARTS evaluation network of a genotype; report its size "
                    "(--params-only). Training arrives with the evaluation pipeline.",
    )
    p.add_argument("--genotype", required=True,
                   help="published genotype name (e.g. DARTS_V2, NASNet-A, BASE_CIFAR) or a "
                        "genotype JSON file")
    p.add_argument("--init-channels", type=int, default=36, help="initial channels C")
    p.add_argument("--layers", type=int, default=20, help="number of cells")
    p.add_argument("--auxiliary", action="store_true", help="add the auxiliary head")
    p.add_argument("--n-classes", type=int, default=10, help="classifier outputs")
    p.add_argument("--input-size", type=int, default=32, help="image height = width (MACs)")
    p.add_argument("--in-channels", type=int, default=3, help="image channels")
    p.add_argument("--stem", choices=("cifar", "imagenet"), default="cifar",
                   help="CIFAR stem (3x3 conv) or ImageNet stems (/8 resolution)")
    p.add_argument("--params-only", action="store_true",
                   help="print params_M (auxiliary head excluded, as DARTS) and macs_M; exit")
    p.add_argument("--log-level", default="WARNING", help="logging level")
    return p


def load_genotype(spec: str):
    """A published genotype by name, or one loaded from a JSON file."""
    from pyro_base.genotype import Genotype, get_genotype

    path = Path(spec)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise ValueError(f"genotype file {spec!r} does not exist")
        return Genotype.load(path)
    return get_genotype(spec)


def build_network(args: argparse.Namespace):
    from pyro_base.network import Network

    genotype = load_genotype(args.genotype)
    return Network(genotype, C=args.init_channels, n_classes=args.n_classes, layers=args.layers,
                   auxiliary=args.auxiliary, stem=args.stem, in_channels=args.in_channels)


def report_size(args: argparse.Namespace) -> int:
    from pyro_base.network import count_macs, count_parameters

    net = build_network(args)
    print(f"params_M: {count_parameters(net):.6f}")
    print(f"macs_M: {count_macs(net, args.input_size) / 1e6:.1f}")
    return 0


def train(args: argparse.Namespace) -> int:
    build_network(args)   # validates the arguments now, so a later run fails fast
    raise SystemExit("train_genotype.py: full training arrives with the evaluation pipeline "
                     "(inference/evaluate.py); for now only --params-only is available")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(message)s")
    try:
        if args.params_only:
            return report_size(args)
        return train(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def cli(argv: Sequence[str] | None = None) -> int:
    return main(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
