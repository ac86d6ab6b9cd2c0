"""Export trained runs: HF directories and PEFT adapters (hf.py), Paddle Inference programs."""
