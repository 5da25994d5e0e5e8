"""What a finished run gives: reopening it, run kinds answering predictions for a split, evaluation, submissions, bare-video prediction, export, ensembles, coverage."""
