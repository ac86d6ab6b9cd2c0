"""Reinforcement learning pieces shared by the GRPO and PPO methods: rewards, advantages."""
