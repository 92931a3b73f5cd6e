"""Inference for BASE, one sub-package per pipeline stage.

* :mod:`.vi`: the ELBO, the optimization-embedding guide and its inner loop, meta-SVI, adaptation.
* :mod:`.posterior`: posterior draws and their ArviZ ``InferenceData``.
* :mod:`.search`: architecture search from scratch (DARTS, SNAS, random, BASE) as baselines.
* :mod:`.evaluate`: training a genotype, the paired held-out evaluation of a run.
* :mod:`.run`: run configuration, the run directory (writer and reader), orchestration of the
  main job and of the experiment.
* :mod:`.report`: plots and the experiment's report.
* :mod:`.commands`: the ``pyro-base`` subcommands.
"""
