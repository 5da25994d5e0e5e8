"""The run folder and everything kept in it: paths, lock, weights, checkpoints, tracking, recipe and provenance, standardization record, the runs table."""
