"""``erniekit chat``: multi-turn chat with a model directory or a training run, streaming tokens.

Prompts are formatted with the tokenizer's chat template, generation uses the KV cache and stops at the
template's end-of-turn token; text is printed as tokens arrive. Greedy by default (``--temperature 0``)
so that a one-shot ``--prompt`` is reproducible.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO


def load_for_inference(path: str | Path):
    """(tokenizer, model) from an HF model directory, or from a checkpoint / run (LoRA merged)."""
    from erniekit.export.hf import merged_model
    from erniekit.models import load_model
    from erniekit.tokenizer import load_tokenizer
    from erniekit.trainer.restore import restore

    path = Path(path)
    if (path / "config.json").is_file():
        model = load_model(path)
        model.eval()
        return load_tokenizer(path), model
    _, tokenizer, model = restore(path)
    return tokenizer, merged_model(model)


class StreamPrinter:
    """Prints the text of a growing token sequence as it grows (whole characters only)."""

    def __init__(self, tokenizer, out: TextIO):
        self.tokenizer, self.out = tokenizer, out
        self.tokens: list[int] = []
        self.shown = ""

    def __call__(self, row: int, token: int) -> None:
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next byte token
            return
        self.out.write(text[len(self.shown) :])
        self.out.flush()
        self.shown = text


def reply(
    tokenizer,
    model,
    messages: list[dict],
    out: TextIO | None = None,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int | None = None,
) -> str:
    ids, _ = tokenizer.encode_chat(messages, add_generation_prompt=True)
    printer = StreamPrinter(tokenizer, out) if out is not None else None
    tokens = model.generate(
        [ids],
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        eos_token_ids=tokenizer.stop_ids,
        pad_token_id=tokenizer.pad_id,
        seed=seed,
        on_token=printer,
    )[0]
    return tokenizer.decode(tokens)


def chat(
    path: str | Path,
    prompt: str | None = None,
    system: str | None = None,
    inp: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
    **sampling,
) -> int:
    tokenizer, model = load_for_inference(path)
    history = [{"role": "system", "content": system}] if system else []
    if prompt is not None:
        reply(tokenizer, model, [*history, {"role": "user", "content": prompt}], out, **sampling)
        out.write("\n")
        return 0
    out.write("erniekit chat: type a message; /clear starts over, /exit or Ctrl-D quits.\n")
    while True:
        out.write("\nuser> ")
        out.flush()
        line = inp.readline()
        if not line or line.strip() == "/exit":
            out.write("\n")
            return 0
        if line.strip() == "/clear":
            history = history[:1] if system else []
            continue
        history.append({"role": "user", "content": line.rstrip("\n")})
        out.write("assistant> ")
        answer = reply(tokenizer, model, history, out, **sampling)
        out.write("\n")
        history.append({"role": "assistant", "content": answer})
