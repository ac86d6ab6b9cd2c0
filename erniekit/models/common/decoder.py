"""A pre-norm decoder-only transformer: the single-device math every family shares.

Legend: B batch, S sequence, H hidden, V vocab.

Parameter names follow the HF module tree without its ``model.`` prefix (``layers.3.self_attn.o_proj``),
with ERNIE's fused ``qkv_proj`` / ``up_gate_proj``; each family's ``hf.py`` maps names and layouts.
Parallelism is not decided here: ``models/<family>/parallel.py`` swaps layers from the outside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import paddle
from paddle import nn

from erniekit.models.common.args import ModelArgs
from erniekit.models.common.attention import Attention, AttentionMask, KVCache
from erniekit.models.common.mlp import MLP, linear
from erniekit.models.common.moe import MoE
from erniekit.models.common.norm import RMSNorm
from erniekit.models.common.rope import RotaryEmbedding


@dataclass
class CausalLMOutput:
    hidden: paddle.Tensor  # [B, S, H] after the final norm
    logits: paddle.Tensor | None  # [B, S, V], or None when compute_logits=False
    aux_loss: paddle.Tensor | None  # mean MoE load-balancing loss over MoE layers (None for dense models)


class DecoderLayer(nn.Layer):
    def __init__(self, args: ModelArgs, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.self_attn = Attention(args, layer_idx)
        self.post_attention_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        if args.is_moe_layer(layer_idx):
            self.mlp = MoE(args)
        else:
            self.mlp = MLP(args.hidden_size, args.intermediate_size, args.linear_bias, args.initializer_range)

    def forward(
        self, x, cos_sin, mask, cache=None, token_types=None
    ) -> tuple[paddle.Tensor, paddle.Tensor | None]:
        """token_types [B, S] (0 text, > 0 image/video) route modality-isolated MoE layers."""
        x = x + self.self_attn(self.input_layernorm(x), cos_sin, mask, cache)
        h = self.post_attention_layernorm(x)
        out = self.mlp(h, token_types) if isinstance(self.mlp, MoE) else self.mlp(h)
        aux = None
        if isinstance(out, tuple):
            out, aux = out
        return x + out, aux


class CausalLM(nn.Layer):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        init = paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, args.initializer_range))
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size, weight_attr=init)
        self.layers = nn.LayerList([DecoderLayer(args, i) for i in range(args.num_layers)])
        self.norm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.rotary = RotaryEmbedding(args.head_dim, args.rope_theta, args.rope_scaling, args.rope_axes)
        self.lm_head = (
            None
            if args.tie_word_embeddings
            else linear(args.hidden_size, args.vocab_size, False, args.initializer_range)
        )
        # set by tensor-parallel plans (models/common/parallel.py): the LM head is split over this group
        self.vocab_group = None
        self.sequence_parallel = False

    def forward(
        self,
        input_ids: paddle.Tensor,
        position_ids: paddle.Tensor | None = None,
        segment_ids: paddle.Tensor | None = None,
        branch_ids: paddle.Tensor | None = None,
        key_padding: paddle.Tensor | None = None,
        cache: KVCache | None = None,
        compute_logits: bool = True,
    ) -> CausalLMOutput:
        """input_ids [B, S]; segment_ids [B, S] separate packed documents; branch_ids [B, S] separate
        continuations of a shared prefix (see attention.py); key_padding [B, T] marks real tokens
        (generation with left padding); cache holds earlier positions."""
        return self.decode(
            self.embed_tokens(input_ids),
            position_ids,
            segment_ids,
            branch_ids,
            key_padding,
            cache,
            compute_logits,
        )

    def embed(self, input_ids: paddle.Tensor, *media) -> tuple[paddle.Tensor, paddle.Tensor | None]:
        """Input embeddings [B, S, H] and MoE token types (None: all text); a VL model splices images."""
        if any(m is not None for m in media):
            raise ValueError(f"a {self.args.family} model reads no images")
        return self.embed_tokens(input_ids), None

    def decode(
        self,
        x: paddle.Tensor,
        position_ids: paddle.Tensor | None = None,
        segment_ids: paddle.Tensor | None = None,
        branch_ids: paddle.Tensor | None = None,
        key_padding: paddle.Tensor | None = None,
        cache: KVCache | None = None,
        compute_logits: bool = True,
        token_types: paddle.Tensor | None = None,
    ) -> CausalLMOutput:
        """The decoder on input embeddings x [B, S, H] (what forward embeds, or a multimodal splice);
        position_ids [B, S], or [3, B, S] with multimodal rotary; token_types [B, S] for MoE routing."""
        b, s = x.shape[:2]
        past = cache.length if cache is not None else 0
        if position_ids is None:
            position_ids = paddle.arange(past, past + s, dtype="int64").unsqueeze(0).expand([b, s])
        # key_padding may span more than the columns written so far: a decode step given the whole
        # cache reads it in place; the causal mask from query_start hides the columns after the step
        key_len = past + s
        if key_padding is not None:
            key_len = key_padding.shape[1]
            if key_len < past + s:
                raise ValueError(f"key_padding has {key_len} columns; this step needs {past + s}")
        mask = AttentionMask(s, key_len, segment_ids, branch_ids, key_padding, query_start=past)
        cos_sin = self.rotary(position_ids)
        aux_losses = []
        for layer in self.layers:
            x, aux = layer(x, cos_sin, mask, cache, token_types)
            if aux is not None:
                aux_losses.append(aux)
        if cache is not None:
            cache.length += s
        hidden = self.norm(x)
        aux_loss = paddle.stack(aux_losses).mean() if aux_losses else None
        return CausalLMOutput(hidden, self.compute_logits(hidden) if compute_logits else None, aux_loss)

    def prompt_positions(self, ids: np.ndarray, real: np.ndarray, images=None, videos=None):
        """Prefill positions [B, S] of left-padded prompts (real: [B, S] bool) and the offsets [B] that
        continue them in decoding (0 here; a multimodal model's 3D positions shift them)."""
        if images is not None or videos is not None:
            raise ValueError(f"a {self.args.family} model reads no images")
        return np.clip(real.cumsum(axis=1) - 1, 0, None), np.zeros(len(ids), np.int64)

    def output_weight(self) -> tuple[paddle.Tensor, bool]:
        """The LM-head weight and whether it is stored [V, H] (tied embeddings) rather than [H, V]."""
        if self.lm_head is None:
            return self.embed_tokens.weight, True
        return self.lm_head.weight, False

    def compute_logits(self, hidden: paddle.Tensor) -> paddle.Tensor:
        """Full-vocabulary logits (gathered from the shards under tensor parallelism)."""
        weight, transposed = self.output_weight()
        logits = paddle.matmul(hidden, weight, transpose_y=transposed)
        if self.vocab_group is not None:
            from paddle.distributed.fleet.layers.mpu import mp_ops

            logits = mp_ops._c_concat(logits, group=self.vocab_group)
        return logits

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        a = self.args
        return KVCache(
            a.num_layers, batch, a.num_kv_heads, max_len, a.head_dim, self.embed_tokens.weight.dtype
        )

    def generate(self, prompts, **kwargs):
        """KV-cache generation; see :func:`erniekit.models.generation.generate`."""
        from erniekit.models.generation import generate

        return generate(self, prompts, **kwargs)
