"""Compute kernels behind one switch: Paddle's fused GPU ops when available, reference math otherwise."""
