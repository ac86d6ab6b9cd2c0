"""Training methods, each a batch shape and a loss: sft.py, dpo.py, grpo.py, ppo.py (rollout.py)."""
