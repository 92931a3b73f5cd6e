"""The posterior of an adapted task: draws, and their ArviZ ``InferenceData``."""
