"""The Pyro model of BASE (:mod:`.base_model`), its priors, relaxations and temperature schedules.

The model knows no training loop; :mod:`pyro_base.inference` drives it.
"""
