"""Fitting a head: the model builder, losses, fine-tuning, the training loop, progress, sweeps, head options."""
