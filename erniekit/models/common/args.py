"""Architecture hyper-parameters shared by every decoder family (pure Python, no Paddle import)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


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

    def is_moe_layer(self, layer_idx: int) -> bool:
        if self.num_experts == 0:
            return False
        end = self.num_layers - 1 if self.moe_layer_end < 0 else self.moe_layer_end
        return (layer_idx + 1) % self.moe_layer_interval == 0 and self.moe_layer_start <= layer_idx <= end

    @property
    def num_moe_layers(self) -> int:
        return sum(self.is_moe_layer(i) for i in range(self.num_layers))

    def to_dict(self) -> dict:
        return asdict(self)
