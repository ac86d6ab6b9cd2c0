"""The TRL peer of the DPO and GRPO rows: ``trl.DPOTrainer`` / ``trl.GRPOTrainer`` on torch CPU, on the same
model shape, data, tokenizer and settings as erniekit's child (benchmarks/rl.py). Run by ``benchmarks.run``:

    python -m benchmarks.peer_trl '{"method": "dpo", "config": {...HF config...}, "batch": 2, ...}'

Random weights from the HF config (seed 0), fp32 (``bf16=False``: TRL turns bf16 on by default on CPU),
no gradient checkpointing (TRL's default is on),
``use_cpu=True``, no vLLM, no dropout; AdamW with erniekit's defaults (lr as given, constant schedule, no
warm-up, no weight decay, clipping at 1.0). DPO gets a frozen copy of the policy as its reference model, as
erniekit's full fine-tuning does. GRPO samples with ``transformers.generate`` (KV cache, temperature 1),
one optimizer step per generation batch (``steps_per_generation=1``, ``num_iterations=1``), no KL term
(beta 0), and the ``grpo`` loss (per-sequence token means, as erniekit's ``seq-mean-token-mean``).

A TrainerCallback times every optimizer step from ``on_step_begin`` to ``on_step_end``: for GRPO that
includes generating and scoring the completions. Tokens per step are counted per sequence, prompt +
completion (TRL's own ``num_input_tokens_seen`` for GRPO). Never imports Paddle or erniekit. Prints one
JSON line.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import timed_steps
from benchmarks.synthetic import trl_reward, write_pairs, write_prompts, write_tokenizer


def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time and input tokens of each optimizer step."""

        def __init__(self):
            self.seconds, self.tokens_seen = [], []

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self.start)
            self.tokens_seen.append(state.num_input_tokens_seen)

    return StepTimer()


def _common_args(spec: dict, out: Path, batch: int) -> dict:
    return dict(
        output_dir=str(out),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        max_steps=spec["steps"],
        learning_rate=spec["lr"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        gradient_checkpointing=False,  # TRL's default is True; erniekit keeps activations
        use_cpu=True,
        bf16=False,
        fp16=False,
        seed=0,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def dpo(spec: dict, model, tokenizer, tmp: Path, timer) -> tuple[object, Callable]:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    vocab = spec["config"]["vocab_size"]
    pairs = write_pairs(
        tmp / "pairs.jsonl", spec["batch"] * spec["steps"], spec["prompt"], spec["reply"], vocab
    )
    args = DPOConfig(
        **_common_args(spec, tmp / "out", spec["batch"]),
        beta=spec["beta"],
        loss_type=["sigmoid"],
        max_length=None,
        precompute_ref_log_probs=False,
    )
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    trainer = DPOTrainer(
        model=model,
        ref_model=ref,
        args=args,
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
        callbacks=[timer],
    )
    first = trainer.train_dataset[0]
    per_pair = 2 * len(first["prompt_ids"]) + len(first["chosen_ids"]) + len(first["rejected_ids"])
    return trainer, lambda: [spec["batch"] * per_pair] * len(timer.seconds)


def grpo(spec: dict, model, tokenizer, tmp: Path, timer) -> tuple[object, Callable]:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    vocab = spec["config"]["vocab_size"]
    prompts = write_prompts(tmp / "prompts.jsonl", spec["prompts"] * spec["steps"], spec["prompt"], vocab)
    args = GRPOConfig(
        **_common_args(spec, tmp / "out", spec["prompts"] * spec["group"]),
        num_generations=spec["group"],
        max_completion_length=spec["completion"],
        temperature=spec["temperature"],
        top_p=1.0,
        top_k=0,
        steps_per_generation=1,
        num_iterations=1,
        beta=0.0,
        loss_type="grpo",
        scale_rewards="group",
        epsilon=0.2,
        use_vllm=False,
        log_completions=False,
        shuffle_dataset=False,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=trl_reward,
        args=args,
        train_dataset=Dataset.from_list([{"prompt": p["prompt"]} for p in prompts]),
        processing_class=tokenizer,
        callbacks=[timer],
    )

    def tokens() -> list[float]:
        seen = [0, *timer.tokens_seen]
        return [b - a for a, b in itertools.pairwise(seen)]

    return trainer, tokens


def main() -> None:
    spec = json.loads(sys.argv[1])
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokenizer = AutoTokenizer.from_pretrained(
            write_tokenizer(tmp / "tokenizer", spec["config"]["vocab_size"])
        )
        torch.manual_seed(0)
        config = AutoConfig.for_model(**spec["config"])
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
        timer = _step_timer()
        trainer, tokens = {"dpo": dpo, "grpo": grpo}[spec["method"]](spec, model, tokenizer, tmp, timer)
        trainer.train()
        step_tokens = tokens()
        out = {
            **timed_steps(timer.seconds, step_tokens),
            "tokens_per_step": step_tokens[-1],
            "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "final_loss": next(r["loss"] for r in reversed(trainer.state.log_history) if "loss" in r),
        }
        if spec["method"] == "grpo":
            lengths = [r["completions/mean_length"] for r in trainer.state.log_history if "loss" in r]
            out["completion_length"] = sum(lengths[1:]) / len(lengths[1:])
            out["prompt_tokens"] = len(tokenizer(trainer.train_dataset[0]["prompt"])["input_ids"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
