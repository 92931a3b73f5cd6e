"""The ``pyro-base`` subcommands; each module has ``build_parser()`` and ``main(argv)``."""
