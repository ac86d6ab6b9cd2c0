"""``erniekit chat``: multi-turn chat with a model directory or a training run, streaming tokens.

Prompts are formatted with the tokenizer's chat template, generation uses the KV cache and stops at the
template's end-of-turn token; text is printed as tokens arrive. Greedy by default (``--temperature 0``)
so that a one-shot ``--prompt`` is reproducible. Vision-language models take images: ``--image PATH``
with ``--prompt``, or ``/image PATH`` in the interactive mode to attach one to the next message.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO


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
    processor=None,
) -> str:
    from erniekit.data.multimodal import PromptEncoder
    from erniekit.inference.engine import Engine, Request
    from erniekit.tokenizer.stream import TextStream

    ids, images, videos = PromptEncoder(tokenizer, processor, model.args.vision)(messages)
    stream = TextStream(tokenizer)

    def show(token: int) -> None:
        out.write(stream.push(token))
        out.flush()

    request = Request(
        ids,
        max_new_tokens,
        temperature,
        top_p,
        top_k,
        seed,
        eos_token_ids=frozenset(tokenizer.stop_ids),
        on_token=show if out is not None else None,
        images=images,
        videos=videos,
    )
    Engine(model, max_batch=1, max_model_len=len(ids) + max_new_tokens).run([request])
    return tokenizer.decode(request.tokens)


def assistant_message(template, answer: str) -> dict:
    """A reply as history for the next turn: its reasoning (and a thinking model's <response> tags) read
    out, so the template writes it back as it writes training data (earlier reasoning dropped)."""
    from erniekit.tokenizer.tools import split_reply

    reasoning, content, _ = split_reply(answer, template.opens_thinking, False, template.response_tags)
    message = {"role": "assistant", "content": content or ""}
    if reasoning:
        message["reasoning_content"] = reasoning
    return message


def user_message(text: str, images: list[str]) -> dict:
    """A user turn: plain text, or its images (in order) then the text as content parts."""
    if not images:
        return {"role": "user", "content": text}
    return {
        "role": "user",
        "content": [*({"type": "image", "image": p} for p in images), {"type": "text", "text": text}],
    }


def chat(
    path: str | Path,
    prompt: str | None = None,
    system: str | None = None,
    images: list[str] | None = None,
    inp: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
    **sampling,
) -> int:
    from erniekit.errors import ErniekitError
    from erniekit.inference.load import load_for_inference

    tokenizer, model, processor = load_for_inference(path)
    if images and processor is None:
        raise ErniekitError(f"{path}: a {model.args.family} model reads no images (--image)")
    sampling["processor"] = processor
    history = [{"role": "system", "content": system}] if system else []
    if prompt is not None:
        reply(tokenizer, model, [*history, user_message(prompt, images or [])], out, **sampling)
        out.write("\n")
        return 0
    attach = "; /image PATH attaches an image to your next message" if processor is not None else ""
    out.write(f"erniekit chat: type a message; /clear starts over, /exit or Ctrl-D quits{attach}.\n")
    pending = list(images or [])
    while True:
        out.write("\nuser> ")
        out.flush()
        line = inp.readline()
        if not line or line.strip() == "/exit":
            out.write("\n")
            return 0
        if line.strip() == "/clear":
            history, pending = (history[:1] if system else []), []
            continue
        if line.startswith("/image") and processor is not None:
            pending.append(line.removeprefix("/image").strip())
            out.write(f"(image {len(pending)} attached to your next message)\n")
            continue
        turn = user_message(line.rstrip("\n"), pending)
        out.write("assistant> ")
        try:
            answer = reply(tokenizer, model, [*history, turn], out, **sampling)
        except ErniekitError as e:  # an unreadable image: say so, keep the conversation
            out.write(f"error: {e}\n")
            pending = []
            continue
        history += [turn, assistant_message(tokenizer.template, answer)]
        pending = []
        out.write("\n")
