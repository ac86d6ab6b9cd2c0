"""ERNIE 4.5 dense and MoE: model.py (math), hf.py (checkpoints), flavors.py (shapes)."""
