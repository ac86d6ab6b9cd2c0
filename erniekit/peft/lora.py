"""LoRA (https://arxiv.org/abs/2106.09685): y = x W + s * dropout(x) A B, with W frozen.

``s = alpha / rank``, or ``alpha / sqrt(rank)`` with rsLoRA (https://arxiv.org/abs/2312.03732). B starts
at zero so training starts from the base model; with LoRA+ (https://arxiv.org/abs/2402.12354) B learns
``lora_plus_ratio`` times faster than A (a per-parameter learning-rate multiplier).

Our projections are fused (``qkv_proj`` = q|k|v, ``up_gate_proj`` = gate|up). An adapter on a fused
layer shares A across its parts and splits B by columns, which is exactly one adapter per part with a
shared A; asking for a subset (``q_proj, v_proj``) masks the other parts' columns of B to zero.
Routed MoE experts (``experts``) get one adapter pair per expert.

Adapters replace layers in place and keep the base parameters' names (``qkv_proj.weight``), so
checkpoints and HF export are unaffected; the new parameters are ``lora_A`` / ``lora_B``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import paddle
import paddle.nn.functional as F
from paddle import nn

from erniekit.models.common.args import ModelArgs
from erniekit.models.common.moe import Experts
from erniekit.peft.targets import ALL_TARGETS, EXPERT_SETS, FUSED_PARTS, LINEAR_NAMES, PART_OF, VISION_PARTS
from erniekit.quant.linear import QuantizedLinear


@dataclass(frozen=True)
class Part:
    name: str  # HF module name of this slice of the output columns
    width: int
    active: bool


def _init_a(shape: list[int]) -> paddle.Tensor:
    # Kaiming-uniform like nn.Linear, over the input dimension (the second to last)
    bound = 1.0 / math.sqrt(shape[-2])
    return nn.initializer.Uniform(-bound, bound)


class LoRALinear(nn.Layer):
    def __init__(
        self,
        base: nn.Linear,
        rank: int,
        alpha: float,
        dropout: float,
        rslora: bool,
        lora_plus_ratio: float,
        parts: list[Part],
    ):
        super().__init__()
        # the frozen weight: a float parameter, or a QuantizedLinear's codes (QLoRA, peft/qlora.py)
        self.quantized = base if isinstance(base, QuantizedLinear) else None
        if self.quantized is None:
            self.weight = base.weight
            self.weight.stop_gradient = True
        self.bias = base.bias
        if self.bias is not None:
            self.bias.stop_gradient = True
        if self.quantized is not None:
            self.quantized.bias = None  # added here, under the layer's usual name
        fan_in, fan_out = base.shape if self.quantized is not None else self.weight.shape
        self.rank, self.parts = rank, parts
        self.scale = alpha / math.sqrt(rank) if rslora else alpha / rank
        self.lora_A = self.create_parameter([fan_in, rank], default_initializer=_init_a([fan_in, rank]))
        self.lora_B = self.create_parameter(
            [rank, fan_out],
            attr=paddle.ParamAttr(learning_rate=lora_plus_ratio),
            default_initializer=nn.initializer.Constant(0.0),
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        mask = [float(p.active) for p in parts for _ in range(p.width)]
        self.register_buffer("mask", paddle.to_tensor(mask, "float32"), persistable=False)
        self.partial = not all(p.active for p in parts)
        self.enabled = True

    def base_weight(self) -> paddle.Tensor:
        """The frozen weight [in, out] as the layer computes with it (dequantised if stored quantised)."""
        return self.weight if self.quantized is None else self.quantized.dequantized()

    def base_forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.quantized is None:
            return F.linear(x, self.weight, self.bias)
        y = self.quantized(x)
        return y if self.bias is None else y + self.bias

    def delta_b(self) -> paddle.Tensor:
        return self.lora_B * self.mask if self.partial else self.lora_B

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.base_forward(x)
        if not self.enabled:
            return y
        h = self.dropout(x) if self.dropout is not None else x
        # the scale on B [r, out], not on the [B, S, out] product: two elementwise passes fewer
        return y + paddle.matmul(paddle.matmul(h, self.lora_A), self.delta_b() * self.scale)

    def delta_weight(self) -> paddle.Tensor:
        return paddle.matmul(self.lora_A, self.delta_b()) * self.scale


class LoRAExperts(Experts):
    """Routed experts with one (A, B) pair per expert for both of their matrices.

    The low-rank updates are folded into each expert's weights on every forward (cheap next to the
    expert matmuls, and one matmul per expert segment stays one); LoRA dropout does not apply here.
    """

    def __init__(self, base: Experts, rank: int, alpha: float, rslora: bool, lora_plus_ratio: float):
        nn.Layer.__init__(self)
        self.num_experts, self.capacity_factor = base.num_experts, base.capacity_factor
        self.up_gate_proj, self.down_proj = base.up_gate_proj, base.down_proj
        self.up_gate_proj.stop_gradient = self.down_proj.stop_gradient = True
        self.scale = alpha / math.sqrt(rank) if rslora else alpha / rank
        e, h, two_i = self.up_gate_proj.shape
        b_attr = paddle.ParamAttr(learning_rate=lora_plus_ratio)
        zeros = nn.initializer.Constant(0.0)
        self.lora_up_gate_A = self.create_parameter([e, h, rank], default_initializer=_init_a([e, h, rank]))
        self.lora_up_gate_B = self.create_parameter([e, rank, two_i], attr=b_attr, default_initializer=zeros)
        self.lora_down_A = self.create_parameter(
            [e, two_i // 2, rank], default_initializer=_init_a([e, two_i // 2, rank])
        )
        self.lora_down_B = self.create_parameter([e, rank, h], attr=b_attr, default_initializer=zeros)
        self.enabled = True

    def delta_weights(self) -> tuple[paddle.Tensor, paddle.Tensor]:
        return (
            paddle.bmm(self.lora_up_gate_A, self.lora_up_gate_B) * self.scale,
            paddle.bmm(self.lora_down_A, self.lora_down_B) * self.scale,
        )

    def stacked_weights(self) -> tuple[paddle.Tensor, paddle.Tensor]:
        if not self.enabled:
            return self.up_gate_proj, self.down_proj
        d_up_gate, d_down = self.delta_weights()
        return self.up_gate_proj + d_up_gate, self.down_proj + d_down


def _shape(layer: nn.Layer) -> tuple[int, int]:
    """A linear's [in, out], its weight float or quantised."""
    return tuple(layer.shape) if isinstance(layer, QuantizedLinear) else tuple(layer.weight.shape)


def output_parts(name: str, layer: nn.Linear, args: ModelArgs, wanted: set[str]) -> list[Part]:
    """The output-column slices of a layer, each marked active when the targets ask for it."""
    out = _shape(layer)[1]
    if name not in FUSED_PARTS:
        return [Part(name, out, True)]
    if name == "qkv_proj":
        kv = args.num_kv_heads * args.head_dim
        widths = (out - 2 * kv, kv, kv)
    else:
        widths = (out // 2, out // 2)
    whole = name in wanted or "all-linear" in wanted
    return [Part(part, w, whole or part in wanted) for part, w in zip(FUSED_PARTS[name], widths)]


def apply_lora(
    model: nn.Layer,
    targets: list[str],
    rank: int,
    alpha: float,
    dropout: float = 0.0,
    rslora: bool = False,
    lora_plus_ratio: float = 1.0,
) -> list[str]:
    """Freeze ``model`` and insert adapters on ``targets``; returns the adapted layers' names."""
    wanted = set(targets)
    unknown = wanted - set(ALL_TARGETS)
    if unknown:
        raise ValueError(f"unknown LoRA target {sorted(unknown)[0]!r}; choose from {', '.join(ALL_TARGETS)}")
    layer_names = {PART_OF.get(t, (t, 0))[0] for t in wanted}
    if "all-linear" in wanted:
        layer_names |= set(LINEAR_NAMES)
    for p in model.parameters():
        p.stop_gradient = True
    adapted = []
    vision_prefixes = tuple(p for t, prefixes in VISION_PARTS.items() if t in wanted for p in prefixes)
    for name, layer in list(model.named_sublayers()):
        parent_name, _, attr = name.rpartition(".")
        parent = model if not parent_name else model.get_sublayer(parent_name)
        in_vision = name.startswith("vision.")
        vision_linear = vision_prefixes and name.startswith(vision_prefixes) and "patch_embed" not in attr
        linear = isinstance(layer, (nn.Linear, QuantizedLinear))
        if linear and ((attr in layer_names and not in_vision) or vision_linear):
            parts = output_parts(attr, layer, model.args, wanted)
            setattr(parent, attr, LoRALinear(layer, rank, alpha, dropout, rslora, lora_plus_ratio, parts))
            adapted.append(name)
        elif isinstance(layer, Experts) and attr in wanted and attr in EXPERT_SETS:
            setattr(parent, attr, LoRAExperts(layer, rank, alpha, rslora, lora_plus_ratio))
            adapted.append(name)
    if not adapted:
        raise ValueError(f"LoRA targets {sorted(wanted)} match no layer of this model")
    return adapted


def lora_layers(model: nn.Layer) -> list[tuple[str, nn.Layer]]:
    return [(n, m) for n, m in model.named_sublayers() if isinstance(m, (LoRALinear, LoRAExperts))]


@contextlib.contextmanager
def adapters_disabled(model: nn.Layer):
    """The base model, temporarily (e.g. the DPO/GRPO reference without a second copy)."""
    layers = [m for _, m in lora_layers(model)]
    for m in layers:
        m.enabled = False
    try:
        yield model
    finally:
        for m in layers:
            m.enabled = True


@paddle.no_grad()
def base_state(model: nn.Layer) -> dict[str, paddle.Tensor]:
    """The model's state dict without its adapters, frozen weights stored quantised (QLoRA) dequantised:
    the base the adapters were trained on."""
    state = {k: v for k, v in model.state_dict().items() if ".lora_" not in k}
    for name, layer in model.named_sublayers():
        if isinstance(layer, LoRALinear) and layer.quantized is not None:
            state[f"{name}.weight"] = layer.base_weight()
        elif isinstance(layer, QuantizedLinear) and not name.endswith(".quantized"):
            state[f"{name}.weight"] = layer.dequantized()  # a quantised layer without adapters
        elif hasattr(layer, "dequantized_state"):  # quantised experts (wint4/8)
            state.update({f"{name}.{k}": v for k, v in layer.dequantized_state().items()})
    return state


@paddle.no_grad()
def merged_state(model: nn.Layer) -> dict[str, paddle.Tensor]:
    """The model's state dict with every adapter folded into its base weight (adapters not included)."""
    state = base_state(model)
    for name, layer in lora_layers(model):
        if isinstance(layer, LoRALinear):
            base = state[f"{name}.weight"]
            state[f"{name}.weight"] = base + layer.delta_weight().astype(base.dtype)
        else:
            dug, dd = layer.delta_weights()
            state[f"{name}.up_gate_proj"] = layer.up_gate_proj + dug
            state[f"{name}.down_proj"] = layer.down_proj + dd
    return state


def merged_model(model: nn.Layer) -> nn.Layer:
    """A plain model (no adapter layers) with any LoRA folded into its weights; the model itself if none."""
    if not lora_layers(model):
        return model
    from erniekit.models import build_model
    from erniekit.models.common.heads import HEADS, attach_head
    from erniekit.models.common.weights import check_and_assign

    plain = build_model(model.args)
    for head in HEADS:
        if getattr(model, head, None) is not None:
            attach_head(plain, head)
    check_and_assign(plain, {k: v.numpy() for k, v in merged_state(model).items()}, "merged LoRA model")
    plain.eval()
    return plain
