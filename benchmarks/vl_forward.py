"""Vision-language forward tokens/s (one image + text, no cache) next to transformers on the same inputs.

    python -m benchmarks.vl_forward [--repeats 5] [--image 448]

For each family (ERNIE 4.5 VL, PaddleOCR-VL) a tiny shape and a ~0.2B one: transformers builds the
model with random weights and saves it, erniekit loads that directory, and both run the same prompt
(``--image`` x ``--image`` pixels -> 256 image tokens at 448, plus 64 text tokens) through the vision
encoder and the decoder with logits. Repeats alternate ours and theirs so drift hits both; the table
gives the median tokens/s (decoder positions per second of the whole forward) and the spread (min-max
over repeats) of each, the ratio of medians, and the max |logit difference| as a check that both ran
the same model. fp32 on CPU, one process, ``OMP_NUM_THREADS`` threads for both frameworks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

# decoder and encoder shapes; the tiny ones are the parity tests' (tests/helpers.py)
SHAPES = {
    "ernie4_5_vl tiny": dict(
        family="ernie4_5_vl",
        text=dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, mrope=[3, 3, 2], moe_num_experts=4, moe_k=2,
                  moe_intermediate_size=[32, 16], moe_num_shared_experts=1),
        vision=dict(depth=2, hidden_size=32, num_heads=2, intermediate_size=64),
    ),
    "ernie4_5_vl 0.2b-shaped": dict(
        family="ernie4_5_vl",
        text=dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=4, mrope=[12, 12, 8], moe_num_experts=8,
                  moe_k=2, moe_intermediate_size=[512, 256], moe_num_shared_experts=1),
        vision=dict(depth=8, hidden_size=512, num_heads=8, intermediate_size=2048),
    ),
    "paddleocr_vl tiny": dict(
        family="paddleocr_vl",
        text=dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, mrope=[2, 3, 3]),
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    image_size=84),
    ),
    "paddleocr_vl 0.2b-shaped": dict(
        family="paddleocr_vl",
        text=dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=4, head_dim=64, mrope=[8, 12, 12]),
        vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                    image_size=384),
    ),
}  # fmt: skip
TOKENS = dict(image=250, start=251, end=252, video=253, video_start=254, video_end=255)


def build_reference(spec: dict, path: str, tokens: dict = TOKENS):
    """A random transformers model of ``spec``, saved to ``path`` (weights far from init, as in tests)."""
    import torch
    from transformers import (
        Ernie4_5_VLMoeConfig,
        Ernie4_5_VLMoeForConditionalGeneration,
        PaddleOCRVLConfig,
        PaddleOCRVLForConditionalGeneration,
    )

    text = dict(spec["text"])
    rope = {"rope_type": "default", "rope_theta": 500000.0, "mrope_section": text.pop("mrope")}
    torch.manual_seed(0)
    if spec["family"] == "ernie4_5_vl":
        layers = text["num_hidden_layers"]
        cfg = Ernie4_5_VLMoeConfig(
            text_config={
                **text,
                "rope_parameters": rope,
                "mlp_layer_types": ["dense"] + ["sparse"] * (layers - 1),
            },
            vision_config=spec["vision"],
            image_token_id=tokens["image"],
            image_start_token_id=tokens["start"],
            image_end_token_id=tokens["end"],
            video_token_id=tokens["video"],
            video_start_token_id=tokens["video_start"],
            video_end_token_id=tokens["video_end"],
        )
        model = Ernie4_5_VLMoeForConditionalGeneration(cfg)
    else:
        cfg = PaddleOCRVLConfig(
            text_config={**text, "rope_parameters": rope, "tie_word_embeddings": False},
            vision_config=spec["vision"],
            image_token_id=tokens["image"],
            vision_start_token_id=tokens["start"],
            vision_end_token_id=tokens["end"],
            video_token_id=tokens["video"],
            tie_word_embeddings=False,
        )
        model = PaddleOCRVLForConditionalGeneration(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            elif not name.endswith("bias") and "e_score" not in name:
                p.normal_(0.0, 0.05)
    model.eval().save_pretrained(path)
    return model


def reference_inputs(family: str, ids, pixel_values, grid_thw, tokens: dict = TOKENS) -> dict:
    """transformers' forward arguments for our arrays: token types spelled out (which tokens are an
    image's, and for ERNIE VL which go to the vision experts), PaddleOCR-VL's patches as images."""
    import torch

    t_ids = torch.tensor(ids)
    pixels = torch.tensor(pixel_values)
    kw = dict(input_ids=t_ids, image_grid_thw=torch.tensor(grid_thw))
    kw["mm_token_type_ids"] = (t_ids == tokens["image"]).long()
    if family == "ernie4_5_vl":
        vision = (t_ids == tokens["image"]) | (t_ids == tokens["start"]) | (t_ids == tokens["end"])
        kw["moe_mm_token_type_ids"] = vision.long()
    else:
        pixels = pixels.reshape(pixels.shape[0], 3, 14, 14)
    return {**kw, "pixel_values": pixels}


def measure(name: str, spec: dict, image_side: int, repeats: int) -> dict:
    import numpy as np
    import paddle
    import torch
    from PIL import Image

    from erniekit.models import image_processor, load_model

    with tempfile.TemporaryDirectory() as tmp:
        ref = build_reference(spec, tmp)
        ours = load_model(tmp)
        ours.eval()
    picture = Image.fromarray(
        (np.random.RandomState(0).rand(image_side, image_side, 3) * 255).astype("uint8")
    )
    pics = image_processor(ours.args)([picture])
    n = pics.tokens(ours.args.vision.spatial_merge_size)[0]
    text = list(np.random.RandomState(1).randint(5, 240, 64))
    ids = [*text[:8], TOKENS["start"], *[TOKENS["image"]] * n, TOKENS["end"], *text[8:]]
    kw = reference_inputs(spec["family"], np.array([ids]), pics.pixel_values, pics.grid_thw)
    p_ids, p_pixels = paddle.to_tensor([ids]), paddle.to_tensor(pics.pixel_values)

    def theirs():
        with torch.no_grad():
            return ref(**kw).logits.numpy()

    def mine():
        with paddle.no_grad():
            return ours(p_ids, pixel_values=p_pixels, image_grid_thw=pics.grid_thw).logits.numpy()

    diff = float(np.abs(mine() - theirs()).max())  # also the warm-up of both
    times = {"ours": [], "transformers": []}
    for _ in range(repeats):
        for key, fn in (("ours", mine), ("transformers", theirs)):
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    row = {"model": name, "params_M": sum(p.numel() for p in ref.parameters()) / 1e6, "seq": len(ids)}
    for key, ts in times.items():
        rates = [len(ids) / t for t in ts]
        row[f"{key}_tokens_per_sec"] = statistics.median(rates)
        row[f"{key}_spread"] = f"{min(rates):.3g}-{max(rates):.3g}"
    row["ratio"] = row["ours_tokens_per_sec"] / row["transformers_tokens_per_sec"]
    row["max_logit_diff"] = diff
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image", type=int, default=448, help="side of the square test image in pixels")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    args = parser.parse_args()
    from erniekit.runtime import setup_runtime

    setup_runtime()
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from benchmarks.common import report

    rows = [measure(name, SHAPES[name], args.image, args.repeats) for name in args.shapes]
    columns = ["model", "params_M", "seq", "ours_tokens_per_sec", "ours_spread",
               "transformers_tokens_per_sec", "transformers_spread", "ratio", "max_logit_diff"]  # fmt: skip
    report(
        "vl_forward",
        rows,
        columns,
        notes=f"fp32, random weights, one {args.image}x{args.image} image + 64 text tokens, full forward"
        f" (vision encoder, decoder, LM head), median of {args.repeats} alternating repeats;"
        " spread = min-max.",
    )


if __name__ == "__main__":
    main()
