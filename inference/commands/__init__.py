"""The ``pyro-base`` subcommands; each module's ``cli(argv)`` parses the flags and runs it
(exit status: 0, or 2 with one ``error:`` line for bad input)."""
