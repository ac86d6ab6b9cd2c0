"""The torch peer: Hugging Face ``transformers`` + a plain torch training loop (and ``peft`` for LoRA), and
``transformers.generate``, on the same model shape as ours. Run as a child of ``benchmarks.run``:

    python -m benchmarks.peer_torch '{"mode": "train", "config": {...HF config...}, "method": "lora", ...}'

It never imports Paddle or erniekit, so its peak RSS is torch's alone. Random weights from the config
(same shape, same parameter count as ours), random token ids of the same length as our packed rows, the
same optimizer (AdamW, fp32 weights) and LoRA settings (rank 8, alpha 16, all linear layers of the blocks);
``"precision": "bf16"`` runs forward and backward under ``torch.autocast`` bf16 (only worth it on CPUs with
AVX-512-BF16 or AMX). The first step (or a short first generate) is the warm-up, timed apart. Prints one
JSON line.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import sys
import time

from benchmarks.common import timed_steps


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _model(config: dict):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = AutoConfig.for_model(**config)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="sdpa")


def train(spec: dict) -> dict:
    import torch

    model = _model(spec["config"])
    if spec["method"] == "lora":
        from peft import LoraConfig, get_peft_model

        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        model = get_peft_model(
            model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets)
        )
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    vocab, batch, seq = spec["config"]["vocab_size"], spec["batch"], spec["seq"]
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if spec.get("precision") == "bf16"
        else contextlib.nullcontext()
    )
    times = []
    for _ in range(spec["steps"]):
        ids = torch.randint(0, vocab, (batch, seq), generator=gen)
        start = time.perf_counter()
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return {**timed_steps(times, [batch * seq] * len(times)), "peak_rss_MB": _peak_rss_mb()}


def generate(spec: dict) -> dict:
    import torch

    model = _model(spec["config"]).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, spec["config"]["vocab_size"], (spec["batch"], spec["prompt"]), generator=gen)

    def run(new: int):
        with torch.no_grad():
            return model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=0,
            )

    start = time.perf_counter()
    run(spec["warmup_tokens"])
    warmup = time.perf_counter() - start
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        run(spec["new_tokens"])
        times.append(time.perf_counter() - start)
    return {
        "warmup_s": warmup,
        "tokens_per_sec": spec["batch"] * spec["new_tokens"] / statistics.median(times),
        "peak_rss_MB": _peak_rss_mb(),
    }


def gemm(spec: dict) -> dict:
    """fp32 or bf16 ``torch.matmul`` of n x n matrices, median of repeats after one warm-up."""
    import torch

    n, dtype = spec["n"], getattr(torch, spec["dtype"])
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - start)
    return {"gflops_per_sec": 2 * n**3 / statistics.median(times) / 1e9}


def main() -> None:
    spec = json.loads(sys.argv[1])
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    print(json.dumps({"train": train, "generate": generate, "gemm": gemm}[spec["mode"]](spec)))


if __name__ == "__main__":
    main()
