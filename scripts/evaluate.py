#!/usr/bin/env python
"""Paired held-out evaluation of a finished meta-training run: meta-trained W against W_0.

The same as ``pyro-base evaluate``; ``--help`` lists the flags.
"""

import sys

from pyro_base.inference.commands.evaluate import cli

if __name__ == "__main__":
    sys.exit(cli())
