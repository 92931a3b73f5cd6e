#!/usr/bin/env python
"""Benchmark: pyro-base's meta-training step against a plain eager DARTS-style supernet step.

The same as ``pyro-base bench``; ``--help`` lists the flags.
"""

import sys

from pyro_base.inference.commands.bench import cli

if __name__ == "__main__":
    sys.exit(cli())
