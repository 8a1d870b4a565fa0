"""Training: the ANet train step (both stages), checkpoints, callbacks and loops."""
