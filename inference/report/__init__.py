"""Figures and the experiment report."""
