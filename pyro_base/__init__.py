"""pyro-base: BASE (Bayesian meta-Architecture SEarch) as a Pyro probabilistic program.

One namespace over the repository's folders:

* ``pyro_base`` (core, no Pyro): search space, supernet and ops, genotypes and the discrete
  network, task distributions and data sets, checkpoints, training-loop pieces.
* ``pyro_base.models`` (``models/``): the Pyro model, priors, relaxations, temperature schedules.
* ``pyro_base.inference`` (``inference/``): one folder per pipeline stage, task -> model+guide ->
  meta-training -> W -> adaptation -> posterior -> genotype -> evaluation.

The commands are ``pyro-base <command>`` (or ``python -m pyro_base <command>``).
"""

__version__ = "0.2.0"
