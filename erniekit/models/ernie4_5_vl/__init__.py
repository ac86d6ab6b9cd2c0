"""ERNIE 4.5 VL (heterogeneous MoE): model.py (math), hf.py (checkpoints), flavors.py (shapes)."""
