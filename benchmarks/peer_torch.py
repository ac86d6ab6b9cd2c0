"""The torch peer: Hugging Face ``transformers`` + a plain torch training loop (and ``peft`` for LoRA), and
``transformers.generate``, on the same model shape as ours. Run as a child of ``benchmarks.run``:

    python -m benchmarks.peer_torch '{"mode": "train", "config": {...HF config...}, "method": "lora", ...}'

It never imports Paddle or erniekit, so its peak RSS is torch's alone. Random weights from the config
(same shape, same parameter count as ours), random token ids of the same length as our packed rows, the
same optimizer (AdamW, fp32) and LoRA settings (rank 8, alpha 16, all linear layers of the blocks).
Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time


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
    times = []
    for _ in range(spec["steps"]):
        ids = torch.randint(0, vocab, (batch, seq), generator=gen)
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return {"tokens_per_sec": batch * seq / statistics.median(times[1:]), "peak_rss_MB": _peak_rss_mb()}


def generate(spec: dict) -> dict:
    import torch

    model = _model(spec["config"]).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, spec["config"]["vocab_size"], (spec["batch"], spec["prompt"]), generator=gen)
    new = spec["new_tokens"]

    def run():
        with torch.no_grad():
            return model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=0,
            )

    run()
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {"tokens_per_sec": spec["batch"] * new / statistics.median(times), "peak_rss_MB": _peak_rss_mb()}


def main() -> None:
    spec = json.loads(sys.argv[1])
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    print(json.dumps({"train": train, "generate": generate}[spec["mode"]](spec)))


if __name__ == "__main__":
    main()
