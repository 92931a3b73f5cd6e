#!/usr/bin/env python
"""Train a genotype from scratch (the DARTS evaluation network) and report its accuracy.

The same as ``pyro-base train``; ``--help`` lists the flags.
"""

import sys

from pyro_base.inference.commands.train import cli

if __name__ == "__main__":
    sys.exit(cli())
