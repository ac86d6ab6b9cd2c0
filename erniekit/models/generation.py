"""Autoregressive generation with a KV cache: greedy or sampled, batched with left padding.

The prompt is run once (prefill); every later step feeds only the newest token and reuses the cache,
so the prefix is never recomputed. Only the last position's logits are computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import paddle
import paddle.nn.functional as F

from erniekit.data.images import ImageInputs


def _filter_logits(logits: paddle.Tensor, top_k: int, top_p: float) -> paddle.Tensor:
    """Set logits outside the top-k / nucleus (top-p) sets to -inf; logits [B, V] float32."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = paddle.topk(logits, top_k, axis=-1)[0][:, -1:]
        logits = paddle.where(logits < kth, paddle.full_like(logits, float("-inf")), logits)
    if top_p < 1.0:
        sorted_logits = paddle.sort(logits, axis=-1, descending=True)
        cum = F.softmax(sorted_logits, axis=-1).cumsum(axis=-1)
        # keep the smallest prefix whose mass reaches top_p (the first token is always kept)
        cutoff_idx = paddle.clip(
            (cum < top_p).astype("int64").sum(axis=-1, keepdim=True), max=logits.shape[-1] - 1
        )
        cutoff = paddle.take_along_axis(sorted_logits, cutoff_idx, axis=-1)
        logits = paddle.where(logits < cutoff, paddle.full_like(logits, float("-inf")), logits)
    return logits


def choose_tokens(
    logits: paddle.Tensor, temperature: float, top_k: int, top_p: float, rng: np.random.Generator
) -> np.ndarray:
    """Next tokens [B] from logits [B, V]: argmax at temperature 0, else drawn from ``rng``."""
    if temperature <= 0:
        return logits.astype("float32").argmax(axis=-1).numpy()
    return draw(sampling_cdf(logits, temperature, top_k, top_p), [rng] * logits.shape[0])


def sampling_cdf(logits: paddle.Tensor, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """Cumulative sampling probabilities [B, V] (float64) of logits [B, V] at temperature > 0 after the
    top-k / top-p filters: one pass for every row that samples alike."""
    logits = logits.astype("float32")
    probs = F.softmax(_filter_logits(logits / temperature, top_k, top_p), axis=-1).numpy().astype(np.float64)
    return probs.cumsum(axis=-1)


def draw(cdf: np.ndarray, rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """One token per row of ``cdf``, row i drawing from ``rngs[i]`` (the same generator may repeat)."""
    out = np.empty(len(cdf), dtype=np.int64)
    for i, (c, rng) in enumerate(zip(cdf, rngs)):
        out[i] = min(int(np.searchsorted(c, rng.random() * c[-1], side="right")), len(c) - 1)
    return out


def vision_inputs(images: ImageInputs | None, videos: ImageInputs | None) -> dict:
    """A vision-language model's image and video arguments (none for a text prompt)."""
    out = {}
    if images is not None:
        out.update(pixel_values=paddle.to_tensor(images.pixel_values), image_grid_thw=images.grid_thw)
    if videos is not None:
        out.update(pixel_values_videos=paddle.to_tensor(videos.pixel_values), video_grid_thw=videos.grid_thw)
    return out


def next_token_logits(model, hidden: paddle.Tensor) -> paddle.Tensor:
    """Logits [B, V] at the last position of hidden [B, S, H]; a vision-language model never writes
    image tokens (their embeddings are the images')."""
    logits = model.compute_logits(hidden[:, -1:])[:, -1]
    banned = getattr(model, "vision_token_ids", None)
    return logits if banned is None else paddle.index_fill(logits, banned, 1, float("-inf"))


@paddle.no_grad()
def generate(
    model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    eos_token_ids: Sequence[int] = (),
    pad_token_id: int = 0,
    seed: int | None = None,
    on_token: Callable[[int, int], None] | None = None,
    stop: Callable[[int, list[int]], bool] | None = None,
    images: Sequence | None = None,
    videos: Sequence | None = None,
) -> list[list[int]]:
    """Continue each prompt; returns the new tokens of each (including the EOS that stopped it).

    ``temperature`` 0 is greedy. ``on_token(row, token)`` is called as each token is produced, for
    streaming; ``stop(row, tokens)`` returning True ends a row early (stop strings). Sampling draws from a
    NumPy generator seeded by ``seed``, so runs are reproducible. ``images[row]`` (an ImageInputs, or
    None) holds the images of that prompt's placeholders for a vision-language model (``videos[row]``
    its videos); they are encoded once, in the prefill, and the model's position offsets carry into
    decoding.
    """
    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    batch = len(prompts)
    prompt_len = max(len(p) for p in prompts)
    total = prompt_len + max_new_tokens
    ids = np.full((batch, prompt_len), pad_token_id, dtype=np.int64)
    real = np.zeros((batch, total), dtype=bool)
    for row, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"prompt {row} is empty")
        ids[row, prompt_len - len(prompt) :] = prompt
        real[row, prompt_len - len(prompt) : prompt_len] = True
    pictures = ImageInputs.concat(images) if images is not None else None
    clips = ImageInputs.concat(videos) if videos is not None else None
    vision = vision_inputs(pictures, clips)
    positions, offsets = model.prompt_positions(ids, real[:, :prompt_len], pictures, clips)
    key_padding = paddle.to_tensor(real)
    cache = model.new_cache(batch, total)

    out = model(
        paddle.to_tensor(ids),
        position_ids=paddle.to_tensor(positions),
        key_padding=key_padding[:, :prompt_len],
        cache=cache,
        compute_logits=False,
        **vision,
    )
    next_pos = real.sum(axis=1) + offsets
    eos = set(eos_token_ids)
    finished = np.zeros(batch, dtype=bool)
    generated: list[list[int]] = [[] for _ in range(batch)]
    hidden = out.hidden
    for step in range(max_new_tokens):
        tokens = choose_tokens(next_token_logits(model, hidden), temperature, top_k, top_p, rng)
        tokens = np.where(finished, pad_token_id, tokens)
        for row in np.flatnonzero(~finished):
            generated[row].append(int(tokens[row]))
            if on_token is not None:
                on_token(int(row), int(tokens[row]))
            if int(tokens[row]) in eos or (stop is not None and stop(int(row), generated[row])):
                finished[row] = True
        if finished.all() or step == max_new_tokens - 1:
            break
        key_padding[:, prompt_len + step] = paddle.to_tensor(~finished)  # rows that are done stop mattering
        out = model(
            paddle.to_tensor(tokens.reshape(batch, 1).astype(np.int64)),
            position_ids=paddle.to_tensor(next_pos.reshape(batch, 1).astype(np.int64)),
            key_padding=key_padding,  # the whole cache: read in place, unwritten columns hidden
            cache=cache,
            compute_logits=False,
        )
        next_pos = next_pos + 1
        hidden = out.hidden
    if was_training:
        model.train()
    return generated
