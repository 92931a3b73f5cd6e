#!/usr/bin/env python
"""Fuzz the inputs users hand to pyro-base: only the project's own clean errors may come out.

The same as ``pyro-base fuzz``; ``--help`` lists the flags.
"""

import sys

from pyro_base.inference.commands.fuzz import cli

if __name__ == "__main__":
    sys.exit(cli())
