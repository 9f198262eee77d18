"""Experiment configs (ml_collections): `python -m experiments.main --config=configs/NAME.py`."""
