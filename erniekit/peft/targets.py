"""LoRA target names (pure Python: the recipe checker imports this without loading Paddle).

Our projections are fused; HF names address slices of them.
"""

# HF projection name -> (our fused layer, part index)
PART_OF = {
    "q_proj": ("qkv_proj", 0),
    "k_proj": ("qkv_proj", 1),
    "v_proj": ("qkv_proj", 2),
    "gate_proj": ("up_gate_proj", 0),
    "up_proj": ("up_gate_proj", 1),
}
FUSED_PARTS = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "up_gate_proj": ("gate_proj", "up_proj")}
LINEAR_NAMES = ("qkv_proj", "o_proj", "up_gate_proj", "down_proj")
EXPERT_SETS = ("experts", "vision_experts")  # a VL model's routed sets (text, vision) by attribute name
# vision-language models: every linear of the vision tower, or of the resampler (PaddleOCR-VL's projector)
VISION_PARTS = {"vision_tower": ("vision.tower.",), "resampler": ("vision.resampler.", "vision.projector.")}
ALL_TARGETS = (*LINEAR_NAMES, *PART_OF, *EXPERT_SETS, *VISION_PARTS, "all-linear")
