"""Command-line entry points: `python -m experiments.main` (train / eval / sample)."""
