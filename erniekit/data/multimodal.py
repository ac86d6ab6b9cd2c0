"""Conversations with images -> token ids and the images' patches, as a vision-language model reads them.

The chat template renders each image part as its marker, ``<|IMAGE_START|><|IMAGE_PLACEHOLDER|>
<|IMAGE_END|>`` (ERNIE VL numbers them: ``Picture 1:``); the placeholder is then repeated once per
token the image becomes (t*h*w / merge^2 for its grid), and never trained on. Videos likewise, with
frames merged in pairs. An image part names a file (relative to ``base_dir``, the data file's folder,
or absolute), a ``data:`` URL with base64 bytes, or is a PIL image already.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

import numpy as np

from erniekit.data.images import ImageInputs, ImageProcessor, load_image
from erniekit.errors import DataError
from erniekit.tokenizer.templates import media_kind


def media_parts(messages: list[dict]) -> list[tuple[str, object]]:
    """(kind, source) of every image/video part, in the order the template renders them."""
    out = []
    for m in messages:
        if isinstance(m.get("content"), list) and m.get("role") != "tool":  # a result is JSON, not parts
            for part in m["content"]:
                kind = media_kind(part)
                if kind is not None:
                    source = part.get(part["type"])
                    out.append((kind, source.get("url") if isinstance(source, dict) else source))
    return out


def image_path(source, base_dir: str | Path | None = None) -> Path | None:
    """The file a source names (None for data URLs and in-memory images)."""
    if not isinstance(source, str) or source.startswith(("data:", "http://", "https://")):
        return None
    path = Path(source.removeprefix("file://")).expanduser()
    return Path(base_dir) / path if not path.is_absolute() and base_dir is not None else path


def open_image(source, base_dir: str | Path | None = None):
    """A PIL image from a path, a ``file://`` path or a base64 ``data:`` URL (errors name the source)."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(source, str):
        return source if isinstance(source, Image.Image) else load_image(source)
    if source.startswith("data:"):
        header, _, payload = source.partition(",")
        if ";base64" not in header:
            raise DataError(f"image data URL {header[:40]}...: only base64 data URLs are read")
        try:
            with Image.open(io.BytesIO(base64.b64decode(payload, validate=True))) as img:
                img.load()
                return img.copy()
        except (binascii.Error, UnidentifiedImageError, OSError) as e:
            raise DataError(f"image data URL {header[:40]}...: not a readable image ({e})") from None
    if source.startswith(("http://", "https://")):
        raise DataError(f"{source}: images are read from files or data URLs, not fetched from the network")
    return load_image(image_path(source, base_dir))


def expand(ids: list[int], trainable: list[bool], token_id: int, counts: list[int]) -> tuple[list, list]:
    """Each occurrence of ``token_id`` repeated counts[i] times (not trained on)."""
    where = [i for i, t in enumerate(ids) if t == token_id]
    if len(where) != len(counts):
        raise DataError(f"the conversation renders {len(where)} placeholders for {len(counts)} images/videos")
    out_ids, out_train, start = [], [], 0
    for i, n in zip(where, counts):
        out_ids += ids[start:i] + [token_id] * n
        out_train += trainable[start:i] + [False] * n
        start = i + 1
    return out_ids + ids[start:], out_train + trainable[start:]


def encode_conversation(
    tokenizer,
    processor: ImageProcessor,
    vision,
    messages: list[dict],
    add_generation_prompt: bool = False,
    base_dir: str | Path | None = None,
    tools: list[dict] | None = None,
    keep_reasoning: str = "last",
) -> tuple[list[int], list[bool], ImageInputs | None, ImageInputs | None]:
    """-> (ids, trainable, images, videos) for a model with VisionArgs ``vision``."""
    _check_ids(tokenizer, vision)
    ids, trainable = tokenizer.encode_chat(messages, add_generation_prompt, tools, keep_reasoning)
    parts = media_parts(messages)
    pictures = [open_image(s, base_dir) for kind, s in parts if kind == "image"]
    clips = [[open_image(f, base_dir) for f in _frames(s)] for kind, s in parts if kind == "video"]
    images = processor(pictures) if pictures else None
    merge = vision.spatial_merge_size
    ids, trainable = expand(ids, trainable, vision.image_token_id, images.tokens(merge) if images else [])
    videos = ImageInputs.concat([processor.video(frames) for frames in clips]) if clips else None
    if videos is not None or vision.video_token_id in ids:
        counts = [n // vision.temporal_merge_size for n in videos.tokens(merge)] if videos else []
        ids, trainable = expand(ids, trainable, vision.video_token_id, counts)
    return ids, trainable, images, videos


class PromptEncoder:
    """Conversations -> prompt ids and their images, for a text model (processor None: the chat
    template alone) or a vision-language one (images preprocessed, placeholders expanded)."""

    def __init__(self, tokenizer, processor: ImageProcessor | None = None, vision=None):
        self.tokenizer, self.processor, self.vision = tokenizer, processor, vision

    def __call__(
        self,
        messages: list[dict],
        base_dir: str | Path | None = None,
        add_generation_prompt: bool = True,
        tools: list[dict] | None = None,
    ) -> tuple[list[int], ImageInputs | None, ImageInputs | None]:
        if self.processor is None:
            return self.tokenizer.encode_chat(messages, add_generation_prompt, tools)[0], None, None
        ids, _, images, videos = encode_conversation(
            self.tokenizer, self.processor, self.vision, messages, add_generation_prompt, base_dir, tools
        )
        return ids, images, videos


def _frames(source) -> list:
    if isinstance(source, (list, tuple)) and source:
        return list(source)
    raise DataError(f"a video part lists its frames (image files), got {source!r}")


def _check_ids(tokenizer, vision) -> None:
    """The tokenizer's image tokens must be the ids the model's config gives them."""
    for text, model_id in (
        ("<|IMAGE_PLACEHOLDER|>", vision.image_token_id),
        ("<|IMAGE_START|>", vision.image_start_token_id),
        ("<|IMAGE_END|>", vision.image_end_token_id),
    ):
        have = tokenizer.special_tokens.get(text)
        if have is not None and have != model_id:
            raise DataError(
                f"the tokenizer's {text} is id {have}, but the model's config.json says {model_id}"
            )


def encode_vl_sft(
    tokenizer,
    processor: ImageProcessor,
    vision,
    messages: list[dict],
    max_len: int,
    truncation: str,
    stats,
    base_dir: str | Path | None = None,
    tools: list[dict] | None = None,
    keep_reasoning: str = "last",
) -> dict | None:
    """An SFT example of a vision-language model as dataset columns, or None when it is dropped.

    Labels as for text (erniekit.data.tokenize.shift); an example longer than ``max_len`` is cut on the
    right only when every image stays whole (``truncation`` right/turns), otherwise dropped.
    """
    from erniekit.data.tokenize import IGNORE, shift

    ids, trainable, images, videos = encode_conversation(
        tokenizer, processor, vision, messages, base_dir=base_dir, tools=tools, keep_reasoning=keep_reasoning
    )
    if len(ids) - 1 > max_len:
        media_ids = {
            vision.image_token_id,
            vision.image_end_token_id,
            vision.video_token_id,
            vision.video_end_token_id,
        }
        last_media = max((i for i, t in enumerate(ids) if t in media_ids), default=-1)
        if truncation == "drop" or last_media >= max_len:
            stats.dropped_overlong += 1
            return None
        stats.truncated += 1
        ids, trainable = ids[: max_len + 1], trainable[: max_len + 1]
    inputs, labels = shift(ids, trainable)
    if all(label == IGNORE for label in labels):
        stats.dropped_no_target += 1
        return None
    stats.examples += 1
    return {"input_ids": inputs, "labels": labels, **media_columns(images, videos)}


MEDIA_COLUMNS = ("pixels", "grids", "video_pixels", "video_grids")


def media_columns(images: ImageInputs | None, videos: ImageInputs | None) -> dict:
    """Images as dataset columns: their resized uint8 frames (bytes, before normalisation and patching:
    a quarter of the float32 patches) and their [t, h, w] grids (empty when none)."""

    def split(x: ImageInputs | None) -> tuple[bytes, list]:
        if x is None:
            return b"", []
        return b"".join(np.ascontiguousarray(f).tobytes() for f in x.frames), x.grid_thw.tolist()

    (pixels, grids), (video_pixels, video_grids) = split(images), split(videos)
    return {"pixels": pixels, "grids": grids, "video_pixels": video_pixels, "video_grids": video_grids}


def media_features() -> dict:
    """``datasets`` types of the media columns (frame bytes may pass 2 GiB per file: large_binary)."""
    import datasets

    grid = datasets.Sequence(datasets.Sequence(datasets.Value("int64")))
    blob = datasets.Value("large_binary")
    return {"pixels": blob, "grids": grid, "video_pixels": blob, "video_grids": grid}


def media_inputs(row: dict, processor: ImageProcessor) -> tuple[ImageInputs | None, ImageInputs | None]:
    """Dataset columns back to (images, videos), normalised and patched by ``processor``."""

    def join(pixels: bytes, grids) -> ImageInputs | None:
        if not grids:
            return None
        data, start, items = np.frombuffer(pixels, np.uint8), 0, []
        p, tp = processor.patch_size, processor.temporal_patch_size
        for t, h, w in grids:
            size = t * tp * h * p * w * p * 3
            items.append(data[start : start + size].reshape(t * tp, h * p, w * p, 3))
            start += size
        return processor.from_frames(items)

    return join(row["pixels"], row["grids"]), join(row["video_pixels"], row["video_grids"])


def collate_vl(rows, pad_id: int, length: int | None, vision) -> dict:
    """Rows of (input_ids, labels, images, videos) examples -> collate()'s arrays with per-document 3D
    position_ids [3, B, S] and every image (video) of the batch in row-major order, as the model's
    splice consumes them: pixel_values, image_grid_thw (pixel_values_videos, video_grid_thw)."""
    from erniekit.data.packing import collate
    from erniekit.data.positions import multimodal_positions

    arrays = collate([[(ids, labels) for ids, labels, *_ in row] for row in rows], pad_id, length)
    b, s = arrays["input_ids"].shape
    positions = np.zeros((3, b, s), np.int64)
    images, videos = [], []
    for r, row in enumerate(rows):
        start = 0
        for ids, _, pictures, clips in row:
            grids = [x.grid_thw if x is not None else [] for x in (pictures, clips)]
            doc, _ = multimodal_positions(np.asarray([ids]), None, *grids, vision)
            positions[:, r, start : start + len(ids)] = doc[:, 0]
            start += len(ids)
            images.append(pictures)
            videos.append(clips)
    arrays["position_ids"] = positions
    if (pictures := ImageInputs.concat(images)) is not None:
        arrays.update(pixel_values=pictures.pixel_values, image_grid_thw=pictures.grid_thw)
    if (clips := ImageInputs.concat(videos)) is not None:
        arrays.update(pixel_values_videos=clips.pixel_values, video_grid_thw=clips.grid_thw)
    return arrays
