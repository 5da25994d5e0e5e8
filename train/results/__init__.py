"""What a finished run gives: reopening it, run kinds answering predictions for a split, evaluation, submissions,
bare-video prediction, export, ensembles, coverage."""

from train.results import ensemble  # noqa: F401  (registers the ensemble run kind, train/results/kinds.py)
