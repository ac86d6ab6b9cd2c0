"""Pieces every family shares: decoder, attention, rotary, norms, MLP, MoE, weight I/O, parallel plan."""
