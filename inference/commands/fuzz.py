"""Fuzz the inputs users hand to pyro-base (checkpoint bytes, ``.npz`` and image-folder data
sets, config values): only the project's own clean errors may come out.

Usage::

    python scripts/fuzz.py --n 10000 --json fuzz.json      # the full run (about a minute)

Prints the cases per kind (ok, clean error, escaped) and every escape; exits 1 if anything
escaped, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

KINDS = ("checkpoint", "npz", "folder", "config")


def build_parser() -> argparse.ArgumentParser:
    from pyro_base.cli import add_common_arguments

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000, help="generated cases (default: 10000)")
    p.add_argument("--seed", type=int, default=0, help="case i is default_rng([seed, i])")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS),
                   help="which inputs to generate, in turn (default: all)")
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    add_common_arguments(p, config_file=False)
    return p


def main(args: argparse.Namespace) -> int:
    from pyro_base.config import ConfigError
    from pyro_base.inference.run.fuzz import fuzz

    if args.n < 1:
        print("error: --n must be >= 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as work, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # data-set warnings (e.g. one image per class)
        try:
            report = fuzz(n=args.n, seed=args.seed, workdir=work, kinds=tuple(args.kinds))
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    for kind, s in report["by_kind"].items():
        print(f"{kind:10s} {s['cases']:6d} cases: {s['ok']:6d} ok, {s['clean_error']:6d} clean "
              f"errors, {s['escaped']:4d} escaped")
    for e in report["escapes"]:
        print(f"ESCAPED {e['kind']} case {e['case']}: {e['type']}: {e['message']}")
    print(f"{report['n']} cases in {report['seconds']:.0f} s, {report['escaped']} escaped")
    return 1 if report["escaped"] else 0


def cli(argv: Sequence[str] | None = None) -> int:
    return main(build_parser().parse_args(argv))
