"""Llama-family decoders (Llama 2/3, SmolLM2, Qwen2): model.py, hf.py, flavors.py."""
