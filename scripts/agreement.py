#!/usr/bin/env python
"""Split a run's meta-step disagreement into seed noise, task and family differences.

The same as ``pyro-base agreement``; ``--help`` lists the flags.
"""

import sys

from pyro_base.inference.commands.agreement import cli

if __name__ == "__main__":
    sys.exit(cli())
