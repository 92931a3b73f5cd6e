"""Evaluation: training a genotype to full accuracy; the paired held-out evaluation of a run."""
