"""Parameter-efficient fine-tuning: LoRA (lora.py) and the PEFT adapter format (adapter.py)."""
