"""The training loop (loop.py), optimizer and schedule, checkpoints, restoring runs, metrics."""
