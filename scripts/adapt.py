#!/usr/bin/env python
"""Adapt a saved meta-prior (a ``pyro-base meta-svi`` run) to a task.

The same as ``pyro-base adapt``; ``--help`` lists the flags.
"""

import sys

from pyro_base.inference.commands.adapt import cli

if __name__ == "__main__":
    sys.exit(cli())
