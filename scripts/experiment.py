#!/usr/bin/env python
"""BASE's claim, measured: meta-prior adaptation vs. architecture search from scratch.

The same as ``pyro-base experiment``; ``--help`` lists the flags.
"""

import sys

from pyro_base.inference.commands.experiment import cli

if __name__ == "__main__":
    sys.exit(cli())
