"""Architecture hyper-parameters shared by every decoder family (pure Python, no Paddle import)."""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields


@dataclass(frozen=True)
class VisionArgs:
    """The image side of a vision-language model: its encoder's shape and the tokens images occupy.

    ``kind`` names the encoder (``ernie4_5_vl``: ViT with 2D rotary + variable-resolution resampler;
    ``paddleocr_vl``: SigLIP-style NaViT + projector); each family's model.py builds its own.
    """

    kind: str
    depth: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    patch_size: int = 14
    in_channels: int = 3
    spatial_merge_size: int = 2  # s x s patches become one decoder token
    temporal_merge_size: int = 2  # frames merged per token (video)
    layer_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    hidden_act: str = "quick_gelu"
    num_positions: int = 0  # learned position embeddings (a side of sqrt(num_positions) patches); 0: none
    image_token_id: int = 0  # the placeholder repeated once per merged image token
    image_start_token_id: int = 0
    image_end_token_id: int = 0
    video_token_id: int = 0
    video_start_token_id: int = 0
    video_end_token_id: int = 0


def vision_block_params(width: int, mlp: int) -> int:
    """One pre-norm ViT block: two LayerNorms, qkv and output projections, a two-layer MLP (all biased)."""
    return (
        2 * 2 * width
        + (width * 3 * width + 3 * width)
        + (width * width + width)
        + (2 * width * mlp + mlp + width)
    )


@dataclass(frozen=True)
class ModelArgs:
    """The shape of a decoder-only transformer. Families fill it from their HF ``config.json``."""

    family: str  # "ernie4_5" or "llama": which hf.py maps weights and config.json
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rope_theta: float = 10000.0
    rope_interleaved: bool = False  # ERNIE pairs adjacent dims (x0,x1),(x2,x3)..; Llama pairs (xi, xi+d/2)
    rope_scaling: dict | None = None  # Llama-3 style {"rope_type": "llama3", ...}; None = plain RoPE
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    qkv_bias: bool = False  # Qwen2 has biases on q/k/v only
    linear_bias: bool = False  # ERNIE's use_bias: every projection has a bias
    max_position_embeddings: int = 4096
    initializer_range: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    # Mixture of experts (num_experts == 0: dense model)
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    num_shared_experts: int = 0
    moe_layer_start: int = 0
    moe_layer_end: int = -1  # -1: the last layer
    moe_layer_interval: int = 1
    moe_norm_min: float = 1e-12
    router_aux_loss_coef: float = 0.0
    mlp_layer_types: tuple[str, ...] | None = None  # "dense"/"sparse" per layer, overrides moe_layer_*
    vision_moe_intermediate_size: int = 0  # > 0: image/video tokens have their own routed experts
    # Multimodal rotary: which position axis (0 t, 1 h, 2 w) drives each of the head_dim/2 frequencies
    rope_axes: tuple[int, ...] | None = None
    vision: VisionArgs | None = None

    def is_moe_layer(self, layer_idx: int) -> bool:
        if self.num_experts == 0:
            return False
        if self.mlp_layer_types is not None:
            return self.mlp_layer_types[layer_idx] == "sparse"
        end = self.num_layers - 1 if self.moe_layer_end < 0 else self.moe_layer_end
        return (layer_idx + 1) % self.moe_layer_interval == 0 and self.moe_layer_start <= layer_idx <= end

    @property
    def num_moe_layers(self) -> int:
        return sum(self.is_moe_layer(i) for i in range(self.num_layers))

    def to_dict(self) -> dict:
        """Plain JSON data (tuples as lists), as a checkpoint's state.json stores it."""
        return json.loads(json.dumps(asdict(self)))

    def matches(self, saved: dict) -> bool:
        """Whether ``saved`` (a to_dict() of some version) describes this shape; keys added to ModelArgs
        after it was written count as their defaults."""
        defaults = {f.name: f.default for f in fields(self) if f.default is not MISSING}
        return {**json.loads(json.dumps(defaults)), **saved} == self.to_dict()
