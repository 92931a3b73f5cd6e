"""Variational inference: ELBO, guide, inner loop, meta-SVI, adaptation, diagnostics."""
