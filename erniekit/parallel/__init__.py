"""Fleet topology, parallel plans (TP/SP/PP/EP), layout-independent checkpoints, memory plans."""
