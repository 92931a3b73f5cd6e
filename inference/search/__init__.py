"""Architecture search from scratch (DARTS, SNAS, random, BASE): the baselines."""
