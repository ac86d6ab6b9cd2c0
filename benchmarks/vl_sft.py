"""VL-SFT training tokens/s, images included, next to transformers + torch on the same model and batches.

    python -m benchmarks.vl_sft [--repeats 3] [--steps 6] [--shapes "ernie4_5_vl 0.2b-shaped" ...]

For each shape (vl_forward's, with the sample VL tokenizer's image token ids) transformers builds the
model with random weights and saves it, and a data file of chat records is written, each one random
``--image`` x ``--image`` picture (256 image tokens at 448) with a question and a one-line answer.

* ours: the real trainer (``erniekit.trainer.Trainer``, full fine-tuning, fp32 AdamW with clipping) on
  that directory and file, one record per micro-batch (``data.packing=false``), so both sides see the
  same rows; tokens/s as the trainer logs it (data preparation, vision encoder, decoder, loss, backward,
  optimizer step);
* theirs: a plain torch loop (AdamW, ``clip_grad_norm_`` 1.0) over exactly the batches our data
  pipeline produced (token ids, labels, pixel values, grids, saved by the parent), the same mean
  next-token loss over the answer tokens.

Each (framework, repeat) is a fresh child process, ours and theirs alternating, so drift hits both;
a child's tokens/s is the median over its steps after the first. The table gives the median over
repeats with the min-max spread, the ratio of medians, and both first-step losses (same weights, same
batch: they agree, a check that both trained the same model on the same data).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.common import child_command, parse_args_or_run_child, run_child
from benchmarks.vl_forward import SHAPES, build_reference, reference_inputs

# the image/video token ids of samples://ernie_vl_tokenizer (the debug flavors' too)
TOKENS = dict(image=1024, start=1025, end=1026, video=1027, video_start=1028, video_end=1029)
DEFAULT_SHAPES = ["ernie4_5_vl 0.2b-shaped", "paddleocr_vl 0.2b-shaped"]


def recipe_overrides(spec: dict) -> list[str]:
    tmp = Path(spec["tmp"])
    return [
        f"model.path={tmp / 'model'}",
        "model.flavor=null",
        "model.tokenizer=samples://ernie_vl_tokenizer",
        f"data.train=[{{path: {tmp / 'data.jsonl'}}}]",
        "data.eval_holdout=0",
        "data.packing=false",
        "data.max_seq_len=1024",
        f"data.cache_dir={tmp / 'cache'}",
        f"train.output_dir={tmp / 'out'}",
        "train.micro_batch_size=1",
        "train.grad_accum=1",
        f"train.max_steps={spec['steps']}",
        "train.eval_every=0",
        "checkpoint.final=false",
        "checkpoint.every=0",
        "logging.progress=none",
        "logging.visualdl=false",
    ]


def ours(spec: dict) -> dict:
    from benchmarks.common import peak_rss_mb
    from erniekit.config import load_recipe
    from erniekit.trainer.loop import Trainer
    from erniekit.trainer.metrics import read_metrics

    trainer = Trainer(load_recipe("ernie4_5_vl/debug_sft", recipe_overrides(spec)))
    trainer.fit()
    records = [r for r in read_metrics(trainer.output_dir / "metrics.jsonl") if "loss" in r]
    return {
        "tokens_per_sec": statistics.median(r["tokens_per_sec"] for r in records[1:]),
        "first_loss": records[0]["loss"],
        "peak_rss_MB": peak_rss_mb(),
    }


def theirs(spec: dict) -> dict:
    import time

    import numpy as np
    import torch
    from transformers import AutoModelForImageTextToText

    from benchmarks.common import peak_rss_mb

    torch.set_num_threads(int(spec["threads"]))
    model = AutoModelForImageTextToText.from_pretrained(
        Path(spec["tmp"]) / "model", dtype=torch.float32, attn_implementation="sdpa"
    ).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)
    batches = np.load(Path(spec["tmp"]) / "batches.npz")
    times, losses = [], []
    for step in range(spec["steps"]):
        b = {k.removeprefix(f"{step}/"): batches[k] for k in batches.files if k.startswith(f"{step}/")}
        kw = reference_inputs(spec["family"], b["input_ids"], b["pixel_values"], b["image_grid_thw"], TOKENS)
        labels = torch.tensor(b["labels"]).reshape(-1)  # ours are already the next token at each position
        start = time.perf_counter()
        logits = model(**kw).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(labels.numel(), -1), labels, ignore_index=-100
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        losses.append(float(loss))
    return {
        "tokens_per_sec": statistics.median(n / t for n, t in zip(spec["tokens"][1:], times[1:])),
        "first_loss": losses[0],
        "peak_rss_MB": peak_rss_mb(),
    }


def child(spec: dict) -> dict:
    return ours(spec) if spec["side"] == "ours" else theirs(spec)


def write_data(tmp: Path, records: int, side: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(0)
    lines = []
    for i in range(records):
        name = f"image_{i}.png"
        Image.fromarray(rng.randint(0, 256, (side, side, 3)).astype("uint8")).save(tmp / name)
        question = {"type": "text", "text": "What does this picture show? Answer in one sentence."}
        lines.append(
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "image": name}, question]},
                    {"role": "assistant", "content": f"A field of random coloured dots, number {i}."},
                ]
            }
        )
    (tmp / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def dump_batches(spec: dict) -> list[int]:
    """The batches our trainer will train on, in order, saved for the torch child; their token counts."""
    import numpy as np

    from erniekit.config import load_recipe
    from erniekit.trainer.loop import Trainer

    trainer = Trainer(load_recipe("ernie4_5_vl/debug_sft", recipe_overrides(spec)))
    arrays, tokens = {}, []
    for step in range(spec["steps"]):
        (batch,) = trainer.method.next_micro_batches(1)
        for key in ("input_ids", "labels", "pixel_values", "image_grid_thw"):
            arrays[f"{step}/{key}"] = batch[key].numpy()
        tokens.append(int(batch["input_ids"].shape[1]))
    np.savez(Path(spec["tmp"]) / "batches.npz", **arrays)
    return tokens


def measure(name: str, args) -> dict:
    import os

    shape = SHAPES[name]
    with tempfile.TemporaryDirectory() as tmp:
        reference = build_reference(shape, str(Path(tmp) / "model"), TOKENS)
        params = sum(p.numel() for p in reference.parameters())
        del reference
        write_data(Path(tmp), args.records, args.image)
        spec = {
            "tmp": tmp,
            "steps": args.steps,
            "family": shape["family"],
            "threads": os.environ["OMP_NUM_THREADS"],
        }
        spec["tokens"] = dump_batches(spec)
        runs = {"ours": [], "transformers": []}
        for _ in range(args.repeats):
            for side, key in (("ours", "ours"), ("theirs", "transformers")):
                runs[key].append(run_child(child_command("benchmarks.vl_sft", {**spec, "side": side})))
                print(f"  {name} {key}: {runs[key][-1]['tokens_per_sec']:.0f} tokens/s", file=sys.stderr)
    row = {"model": name, "params_M": params / 1e6, "tokens_per_row": statistics.median(spec["tokens"])}
    for key, results in runs.items():
        rates = [r["tokens_per_sec"] for r in results]
        row[f"{key}_tokens_per_sec"] = statistics.median(rates)
        row[f"{key}_spread"] = f"{min(rates):.3g}-{max(rates):.3g}"
        row[f"{key}_peak_rss_MB"] = max(r["peak_rss_MB"] for r in results)
        row[f"{key}_first_loss"] = results[0]["first_loss"]
    row["ratio"] = row["ours_tokens_per_sec"] / row["transformers_tokens_per_sec"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--steps", type=int, default=6, help="optimizer steps per child (the first is warm-up)"
    )
    parser.add_argument("--records", type=int, default=8)
    parser.add_argument("--image", type=int, default=448, help="side of the square pictures in pixels")
    parser.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, choices=list(SHAPES))
    args = parse_args_or_run_child(parser, child)
    if args is None:
        return
    from benchmarks.common import report

    rows = [measure(name, args) for name in args.shapes]
    columns = ["model", "params_M", "tokens_per_row", "ours_tokens_per_sec", "ours_spread",
               "transformers_tokens_per_sec", "transformers_spread", "ratio", "ours_first_loss",
               "transformers_first_loss", "ours_peak_rss_MB", "transformers_peak_rss_MB"]  # fmt: skip
    report(
        "vl_sft",
        rows,
        columns,
        notes=f"fp32 full fine-tuning on CPU, AdamW, batch 1 (one {args.image}x{args.image} picture and its"
        f" chat per row), {args.steps} steps per child process, {args.repeats} alternating repeats;"
        " tokens/s median over steps after the first, then over repeats; spread = min-max over repeats.",
    )


if __name__ == "__main__":
    main()
