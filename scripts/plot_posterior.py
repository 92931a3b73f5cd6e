#!/usr/bin/env python
"""Draw every picture of a meta-training run: op heatmaps, forest plots, cells, curves.

The same as ``pyro-base plot``; ``--help`` lists the flags.
"""

import sys

from pyro_base.inference.commands.plot import cli

if __name__ == "__main__":
    sys.exit(cli())
