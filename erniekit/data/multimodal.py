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

from erniekit.data.images import ImageInputs, ImageProcessor, load_image
from erniekit.errors import DataError
from erniekit.tokenizer.templates import media_kind


def media_parts(messages: list[dict]) -> list[tuple[str, object]]:
    """(kind, source) of every image/video part, in the order the template renders them."""
    out = []
    for m in messages:
        if isinstance(m.get("content"), list):
            for part in m["content"]:
                kind = media_kind(part)
                if kind is not None:
                    source = part.get(part["type"])
                    out.append((kind, source.get("url") if isinstance(source, dict) else source))
    return out


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
    path = Path(source.removeprefix("file://")).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return load_image(path)


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
) -> tuple[list[int], list[bool], ImageInputs | None, ImageInputs | None]:
    """-> (ids, trainable, images, videos) for a model with VisionArgs ``vision``."""
    _check_ids(tokenizer, vision)
    ids, trainable = tokenizer.encode_chat(messages, add_generation_prompt)
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
