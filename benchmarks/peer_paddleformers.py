"""The PaddleFormers peer: its ``LlamaForCausalLM`` (and ``paddleformers.peft`` LoRA) in a plain Paddle AdamW
loop, on the same model shape as ours. Run by ``benchmarks.run`` with the interpreter of the separate
virtualenv PaddleFormers needs (``scripts/peer_venv.sh``; it pins numpy 1.26 and its own transformers):

    /path/to/pf-venv/bin/python benchmarks/peer_paddleformers.py '{"config": {...}, "method": "full", ...}'

Same Paddle version (3.3.1), same thread and MKL settings as ours (set below, before Paddle loads), random
token ids of our row length, AdamW with clipping, fp32. Its fused RMSNorm has no CPU kernel in Paddle 3.3,
so ``fuse_rms_norm`` is off (its own unfused path). A plain loop, not its Trainer: that is the peer's
best case. The first step is the warm-up, timed apart; tokens/s is over the rest. Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time


def main() -> None:
    spec = json.loads(sys.argv[1])
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")
    import paddle
    from paddleformers.transformers import LlamaConfig, LlamaForCausalLM

    paddle.seed(0)
    config = {
        k: v for k, v in spec["config"].items() if k not in ("architectures", "model_type", "torch_dtype")
    }
    model = LlamaForCausalLM(LlamaConfig(**config, fuse_rms_norm=False, use_flash_attention=False))
    if spec["method"] == "lora":
        from paddleformers.peft import LoRAConfig, LoRAModel

        targets = [
            f".*{n}.*" for n in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
        ]
        model = LoRAModel(model, LoRAConfig(target_modules=targets, r=8, lora_alpha=16, lora_dropout=0.0))
        model.mark_only_lora_as_trainable()
    model.train()
    params = [p for p in model.parameters() if not p.stop_gradient]
    opt = paddle.optimizer.AdamW(
        1e-4, parameters=params, weight_decay=0.01, grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0)
    )
    vocab, batch, seq = spec["config"]["vocab_size"], spec["batch"], spec["seq"]
    times = []
    for _ in range(spec["steps"]):
        ids = paddle.randint(0, vocab, [batch, seq])
        start = time.perf_counter()
        out = model(input_ids=ids, labels=ids)
        loss = out[0] if isinstance(out, (tuple, list)) else out.loss
        loss.backward()
        opt.step()
        opt.clear_grad()
        float(loss)
        times.append(time.perf_counter() - start)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    measured = times[1:]
    print(
        json.dumps(
            {
                "warmup_s": times[0],
                "measured_steps": len(measured),
                "tokens_per_sec": batch * seq * len(measured) / sum(measured),
                "steps_per_sec": len(measured) / sum(measured),
                "step_s": sum(measured) / len(measured),
                "peak_rss_MB": rss,
            }
        )
    )


if __name__ == "__main__":
    main()
