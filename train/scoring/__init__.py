"""Scoring predictions: CCC, predicting a split with a model, smoothing, the run report and plots."""
