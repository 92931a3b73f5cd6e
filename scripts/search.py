#!/usr/bin/env python
"""Search an architecture on one task with BASE (from scratch), DARTS, SNAS or random search.

The same as ``pyro-base search``; ``--help`` lists the flags.
"""

import sys

from pyro_base.inference.commands.search import cli

if __name__ == "__main__":
    sys.exit(cli())
