"""Named Llama-family shapes: real small models and tiny ``debug`` ones for tests."""

from __future__ import annotations

from erniekit.models.llama.model import llama_args

FLAVORS = {
    # SmolLM2-135M(-Instruct): the real model the offline demo converts from GGUF
    "smollm2-135m": llama_args(
        vocab_size=49152,
        hidden_size=576,
        num_layers=30,
        num_heads=9,
        num_kv_heads=3,
        head_dim=64,
        intermediate_size=1536,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        max_position_embeddings=8192,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    ),
    # the 20M-parameter shape of the team's CPU throughput measurements (paddle-cpu-lab.md §8)
    "bench-20m": llama_args(
        vocab_size=32000,
        hidden_size=256,
        num_layers=4,
        num_heads=8,
        num_kv_heads=8,
        head_dim=32,
        intermediate_size=688,
        rope_theta=10000.0,
    ),
    "debug": llama_args(
        vocab_size=1024,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        intermediate_size=128,
        tie_word_embeddings=False,
    ),
}
