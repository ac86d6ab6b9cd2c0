"""Regenerate the sample data and tokenizer bundled under erniekit/data/samples/.

    python scripts/make_samples.py

Everything is written for this project: small, deterministic (seeded) task families a tiny model can
start to learn in a few steps (arithmetic, word games, unit conversion, a little Chinese), in each of the
formats the data pipeline reads. The SentencePiece tokenizer is trained on that text, with ERNIE 4.5's
special tokens, so debug recipes exercise the real ERNIE tokenizer path.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "erniekit" / "data" / "samples"
WORDS = [
    "paddle",
    "river",
    "orange",
    "silver",
    "garden",
    "rocket",
    "window",
    "candle",
    "forest",
    "planet",
    "little",
    "bright",
    "winter",
    "summer",
    "yellow",
    "purple",
    "dragon",
    "button",
    "pencil",
    "castle",
]
ZH_EN = {
    "猫": "cat",
    "狗": "dog",
    "水": "water",
    "山": "mountain",
    "书": "book",
    "月亮": "moon",
    "太阳": "sun",
    "朋友": "friend",
    "学校": "school",
    "苹果": "apple",
    "老师": "teacher",
    "花": "flower",
}
UNITS = [
    ("km", "m", 1000),
    ("m", "cm", 100),
    ("kg", "g", 1000),
    ("hours", "minutes", 60),
    ("minutes", "seconds", 60),
]
SYSTEMS = ["You are a careful assistant. Answer briefly.", "你是一个乐于助人的助手。"]


def task(rng: random.Random) -> tuple[str, str]:
    kind = rng.randrange(7)
    if kind == 0:
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        return f"What is {a} + {b}?", f"{a} + {b} = {a + b}."
    if kind == 1:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        return f"What is {a} times {b}?", f"{a} times {b} is {a * b}."
    if kind == 2:
        w = rng.choice(WORDS)
        return f"Reverse the letters of the word '{w}'.", f"'{w}' reversed is '{w[::-1]}'."
    if kind == 3:
        w = rng.choice(WORDS)
        return f"How many letters are in the word '{w}'?", f"The word '{w}' has {len(w)} letters."
    if kind == 4:
        zh, en = rng.choice(list(ZH_EN.items()))
        return f"把这个词翻译成英文：{zh}", f"“{zh}”的英文是 {en}。"
    if kind == 5:
        src, dst, factor = rng.choice(UNITS)
        n = rng.randint(2, 20)
        return f"Convert {n} {src} to {dst}.", f"{n} {src} is {n * factor} {dst}."
    a, b = rng.randint(10, 99), rng.randint(2, 9)
    return f"计算 {a} 减 {b}。", f"{a} 减 {b} 等于 {a - b}。"


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def sft_erniekit(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        turns = [task(rng) for _ in range(1 + (i % 5 == 0))]
        row = {"src": [q for q, _ in turns], "tgt": [a for _, a in turns]}
        if i % 7 == 0:
            row["system"] = rng.choice(SYSTEMS)
        rows.append(row)
    return rows


def sft_alpaca(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for _ in range(n):
        q, a = task(rng)
        if rng.random() < 0.3:
            rows.append({"instruction": "Answer the question below.", "input": q, "output": a})
        else:
            rows.append({"instruction": q, "input": "", "output": a})
    return rows


def sft_messages(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        msgs = [{"role": "system", "content": rng.choice(SYSTEMS)}] if i % 4 == 0 else []
        for t in range(1 + (i % 3 == 0)):
            q, a = task(rng)
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            if t == 0 and len(msgs) > 3:
                msgs[-1]["loss"] = False  # earlier turn kept as context only
        rows.append({"messages": msgs})
    return rows


DODGES = [
    "I do not know.",
    "No idea, sorry.",
    "Ask someone else.",
    "That is not something I can answer.",
    "我不知道。",
    "Why do you ask?",
]


def dpo_pairs(rng: random.Random, n: int) -> tuple[list[dict], list[dict]]:
    """Preference pairs a tiny model can learn: the chosen reply answers, the rejected one dodges or errs.

    Returned in ERNIEKit's DPO layout (src/tgt/response/sort) and in the prompt/chosen/rejected layout."""
    erniekit_rows, pair_rows = [], []
    for i in range(n):
        q, a = task(rng)
        bad = rng.choice(DODGES) if rng.random() < 0.7 else a.replace("1", "7").replace("2", "9") + " Maybe."
        if i % 4 == 3:
            pair_rows.append({"prompt": q, "chosen": a, "rejected": bad})
            continue
        better_first = rng.random() < 0.5
        erniekit_rows.append(
            {
                "src": [q],
                "tgt": [],
                "response": [[a], [bad]] if better_first else [[bad], [a]],
                "sort": [1, 0] if better_first else [0, 1],
            }
        )
    return erniekit_rows, pair_rows


def rl_prompts(rng: random.Random, n: int) -> list[dict]:
    """Arithmetic prompts with numeric answers, for GRPO/PPO smoke runs and generation scoring."""
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 50), rng.randint(2, 11)
        if i % 2:
            rows.append({"prompt": f"What is {a} + {b}?", "answer": str(a + b)})
        else:
            rows.append({"prompt": f"What is {a} times {b}?", "answer": str(a * b)})
    return rows


def train_tokenizer(texts: list[str], out: Path) -> None:
    import sentencepiece as spm

    specials = ["<|begin_of_sentence|>", "<|end_of_sentence|>", "<|im_start|>", "<|im_end|>"]
    out.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()  # in memory: no temporary paths end up recorded in the model file
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=1000,
        model_type="bpe",
        character_coverage=1.0,
        pad_id=0,
        unk_id=3,
        bos_id=1,
        eos_id=2,
        user_defined_symbols=specials,
        byte_fallback=True,
        split_digits=True,
        num_threads=1,
        minloglevel=2,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        shuffle_input_sentence=False,
    )
    (out / "tokenizer.model").write_bytes(model.getvalue())
    config = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "added_tokens_decoder": {
            str(i): {"content": t, "special": True} for i, t in enumerate(specials, start=4)
        },
        "erniekit_chat_template": "ernie4_5",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


# The vision-language debug models (ernie4_5_vl/debug, paddleocr_vl/debug) take these ids for images.
VL_SPECIALS = {
    1024: "<|IMAGE_PLACEHOLDER|>",
    1025: "<|IMAGE_START|>",
    1026: "<|IMAGE_END|>",
    1027: "<|VIDEO_PLACEHOLDER|>",
    1028: "<|VIDEO_START|>",
    1029: "<|VIDEO_END|>",
}


def vl_tokenizer(text: Path, out: Path) -> None:
    """The text tokenizer plus ERNIE VL's image/video tokens, after its vocabulary (ids 1024..1029)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes((text / "tokenizer.model").read_bytes())
    config = json.loads((text / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"].update(
        {str(i): {"content": t, "special": True} for i, t in VL_SPECIALS.items()}
    )
    config["erniekit_chat_template"] = "ernie4_5_vl"
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


SHAPES, COLORS = (
    ("circle", "square", "triangle"),
    {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220)},
)


def vl_shapes(rng: random.Random, n: int, out: Path) -> tuple[list[dict], list[dict], list[dict], list[dict]]:
    """Pictures of one coloured shape each, and questions about them in two VL record layouts:
    ERNIEKit's (text_info/image_info) and chat messages with image parts; plus preference pairs (the
    right colour over a wrong one) and RL prompts (the colour is the answer); images under vl_images/."""
    from PIL import Image, ImageDraw

    (out / "vl_images").mkdir(parents=True, exist_ok=True)
    erniekit_rows, message_rows, pairs, prompts = [], [], [], []
    for i in range(n):
        shape, color = rng.choice(SHAPES), rng.choice(sorted(COLORS))
        w, h = rng.choice([(56, 56), (84, 56), (56, 84)])
        img = Image.new("RGB", (w, h), (245, 245, 240))
        draw = ImageDraw.Draw(img)
        size = rng.randint(18, 30)
        x, y = rng.randint(2, w - size - 2), rng.randint(2, h - size - 2)
        box = (x, y, x + size, y + size)
        if shape == "circle":
            draw.ellipse(box, fill=COLORS[color])
        elif shape == "square":
            draw.rectangle(box, fill=COLORS[color])
        else:
            draw.polygon([(x + size // 2, y), (x, y + size), (x + size, y + size)], fill=COLORS[color])
        name = f"vl_images/shape_{i:03d}.png"
        img.save(out / name, optimize=True)
        answer = f"A {color} {shape}."
        colours = sorted(COLORS)
        wrong = colours[(colours.index(color) + 1) % len(colours)]
        ask = [{"type": "image", "image": name}, {"type": "text", "text": "What colour is the shape?"}]
        pairs.append({"prompt": [{"role": "user", "content": ask}], "chosen": color, "rejected": wrong})
        prompts.append({"prompt": [{"role": "user", "content": ask}], "answer": color})
        if i % 2:
            erniekit_rows.append(
                {
                    "image_info": [{"matched_text_index": 0, "image_url": name}],
                    "text_info": [
                        {"text": "What is in the picture?", "tag": "mask"},
                        {"text": answer, "tag": "no_mask"},
                    ],
                }
            )
        else:
            parts = [{"type": "image", "image": name}, {"type": "text", "text": "What is in the picture?"}]
            message_rows.append(
                {"messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": answer}]}
            )
    return erniekit_rows, message_rows, pairs, prompts


def main() -> None:
    rng = random.Random(20261123)
    OUT.mkdir(parents=True, exist_ok=True)
    erniekit_rows = sft_erniekit(rng, 400)
    alpaca_rows = sft_alpaca(rng, 120)
    message_rows = sft_messages(rng, 120)
    write_jsonl(OUT / "sft_erniekit.jsonl", erniekit_rows)
    (OUT / "sft_alpaca.json").write_text(
        json.dumps(alpaca_rows, ensure_ascii=False, indent=1) + "\n", "utf-8"
    )
    write_jsonl(OUT / "sft_messages.jsonl", message_rows)
    dpo_erniekit, dpo_prompt_pairs = dpo_pairs(rng, 320)
    write_jsonl(OUT / "dpo_erniekit.jsonl", dpo_erniekit)
    write_jsonl(OUT / "dpo_pairs.jsonl", dpo_prompt_pairs)
    write_jsonl(OUT / "rl_arithmetic.jsonl", rl_prompts(rng, 200))
    texts = [t for r in erniekit_rows for t in (*r["src"], *r["tgt"], r.get("system", ""))]
    texts += [r["instruction"] + " " + r["input"] + " " + r["output"] for r in alpaca_rows]
    texts += ["User: Assistant: " for _ in range(20)] + DODGES
    train_tokenizer(texts, OUT / "ernie_tokenizer")
    vl_tokenizer(OUT / "ernie_tokenizer", OUT / "ernie_vl_tokenizer")
    vl_erniekit, vl_messages, vl_pairs, vl_prompts = vl_shapes(random.Random(20261201), 120, OUT)
    write_jsonl(OUT / "vl_shapes_erniekit.jsonl", vl_erniekit)
    write_jsonl(OUT / "vl_shapes_messages.jsonl", vl_messages)
    write_jsonl(OUT / "vl_shapes_dpo.jsonl", vl_pairs)
    write_jsonl(OUT / "vl_shapes_rl.jsonl", vl_prompts)


if __name__ == "__main__":
    main()
