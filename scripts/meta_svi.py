#!/usr/bin/env python
"""Meta-train BASE across tasks, then adapt to held-out tasks (the main job).

The same as ``pyro-base meta-svi``; ``--help`` lists the flags.
"""

import sys

from pyro_base.inference.commands.meta_svi import cli

if __name__ == "__main__":
    sys.exit(cli())
