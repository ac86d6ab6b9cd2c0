"""Images -> the patches a vision encoder reads: smart resize, normalisation, merge-block-major patches.

Legend: P patches of all images, C channels, p patch side, m spatial merge size, grid (t, h, w) in
patches. The result of a batch of images is :class:`ImageInputs`: ``pixel_values`` [P, C * t_p * p * p]
float32 and ``grid_thw`` [n, 3] int64, the layout of transformers' PIL image processors for ERNIE 4.5 VL
and PaddleOCR-VL (and of Qwen2-VL, their ancestor):

1. RGB (transparency composited on white; greyscale and palette images converted);
2. smart resize: each side rounded to a multiple of ``p * m`` (Python ``round``, ties to even: a 70-pixel
   side becomes 56), then scaled into ``[min_pixels, max_pixels]`` keeping the aspect ratio; an aspect
   ratio over ``max_aspect_ratio`` is refused. PIL bicubic from uint8, as the reference;
3. ``x / 255`` (in float64, then float32), then ``(x - mean) / std``;
4. patches in merge-block-major order: the m x m patches of one merged token are consecutive (ERNIE VL,
   whose resampler merges by a reshape), or in raster order (PaddleOCR-VL, whose projector regroups);
   each patch vector channel-major (C, t_p, p, p).

PaddleOCR-VL first raises a side under ``p * m`` pixels to ``p * m``, keeping the aspect ratio.

Video arrives as a list of frames (decoding video files is not supported yet): frames are resized alike,
``t`` is the frame count rounded up to a multiple of ``temporal_patch_size``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from erniekit.errors import DataError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_IMAGE_BYTES = 64 * 2**20  # a decoded image larger than this (e.g. 4096 x 4096 RGBA) is refused


@dataclass
class ImageInputs:
    """Preprocessed images, in the order their placeholders appear in the token sequence."""

    pixel_values: np.ndarray  # [P, C * t_p * p * p] float32
    grid_thw: np.ndarray  # [n, 3] int64, in patches
    frames: list[np.ndarray] | None = None  # the resized uint8 frames [f, H, W, 3] of each image (caching)

    def tokens(self, merge: int) -> list[int]:
        """Decoder tokens each image takes: t * h * w / merge^2."""
        return [int(t * h * w) // (merge * merge) for t, h, w in self.grid_thw]

    @staticmethod
    def concat(items: Sequence[ImageInputs | None]) -> ImageInputs | None:
        present = [i for i in items if i is not None and len(i.grid_thw)]
        if not present:
            return None
        return ImageInputs(
            np.concatenate([i.pixel_values for i in present]), np.concatenate([i.grid_thw for i in present])
        )


@dataclass(frozen=True)
class ImageProcessor:
    """The resize-and-patch rules of one model (its ``preprocessor_config.json``)."""

    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 1
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 6177
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    max_aspect_ratio: float = 200.0
    rescale_factor: float = 1 / 255
    resample: str = "bicubic"
    block_major: bool = True  # patch order: merge blocks (ERNIE VL) or raster (PaddleOCR-VL)
    lift_small_side: bool = False  # raise a side under the factor to it first (PaddleOCR-VL)
    extra: dict = field(default_factory=dict, compare=False)  # other keys of the config, kept on save

    @classmethod
    def from_config(cls, cfg: dict, **defaults) -> ImageProcessor:
        """From a ``preprocessor_config.json`` dict (HF keys), over a family's defaults."""
        base = cls(**defaults)
        size = cfg.get("size") or {}
        return cls(
            patch_size=cfg.get("patch_size", base.patch_size),
            merge_size=cfg.get("merge_size", base.merge_size),
            temporal_patch_size=cfg.get("temporal_patch_size", base.temporal_patch_size),
            min_pixels=cfg.get("min_pixels") or size.get("shortest_edge") or base.min_pixels,
            max_pixels=cfg.get("max_pixels") or size.get("longest_edge") or base.max_pixels,
            mean=tuple(cfg.get("image_mean", base.mean)),
            std=tuple(cfg.get("image_std", base.std)),
            rescale_factor=cfg.get("rescale_factor", base.rescale_factor),
            max_aspect_ratio=base.max_aspect_ratio,
            block_major=base.block_major,
            lift_small_side=base.lift_small_side,
            extra={k: v for k, v in cfg.items() if k not in _KNOWN},
        )

    def to_config(self) -> dict:
        return {
            **self.extra,
            "patch_size": self.patch_size,
            "merge_size": self.merge_size,
            "temporal_patch_size": self.temporal_patch_size,
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            "rescale_factor": self.rescale_factor,
            "resample": 3,  # PIL bicubic
            "do_resize": True,
            "do_rescale": True,
            "do_normalize": True,
            "do_convert_rgb": True,
        }

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    def smart_resize(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) an image is resized to; ValueError for an extreme aspect ratio."""
        f = self.factor
        if min(height, width) < 1:
            raise ValueError(f"image of {width}x{height} pixels has no area")
        size = f"{width}x{height}"
        if self.lift_small_side and height < f:
            height, width = f, round(width * f / height)
        if self.lift_small_side and width < f:
            height, width = round(height * f / width), f
        ratio = max(height, width) / min(height, width)
        if ratio > self.max_aspect_ratio:
            raise ValueError(
                f"aspect ratio {ratio:.0f}:1 of a {size} image is over the limit of "
                f"{self.max_aspect_ratio:.0f}:1"
            )
        h, w = round(height / f) * f, round(width / f) * f
        if h * w > self.max_pixels:
            beta = math.sqrt(height * width / self.max_pixels)
            h, w = max(f, math.floor(height / beta / f) * f), max(f, math.floor(width / beta / f) * f)
        elif h * w < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (height * width))
            h, w = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
        return h, w

    def __call__(self, images: Sequence) -> ImageInputs:
        """Images (PIL images, file paths, or HWC uint8 arrays) -> one ImageInputs, in order."""
        return self.from_frames([self.resize([img if _is_pil(img) else load_image(img)]) for img in images])

    def video(self, frames: Sequence) -> ImageInputs:
        """A video given as its frames (PIL images or paths) -> ImageInputs with one grid of t frames."""
        return self.from_frames([self.resize([f if _is_pil(f) else load_image(f) for f in frames])])

    def resize(self, frames: list) -> np.ndarray:
        """The costly half: PIL frames -> uint8 [f, H', W', 3], RGB, smart-resized (the first frame's
        size for all), padded to a multiple of the temporal patch by repeating the last frame."""
        from PIL import Image

        height, width = self.smart_resize(frames[0].height, frames[0].width)
        out = []
        for frame in frames:
            rgb = to_rgb(frame)
            if rgb.size != (width, height):
                rgb = rgb.resize((width, height), resample=Image.Resampling.BICUBIC)
            out.append(np.asarray(rgb))
        while len(out) % self.temporal_patch_size:
            out.append(out[-1])
        return np.stack(out)

    def from_frames(self, items: list[np.ndarray]) -> ImageInputs:
        """Resized uint8 frames (one [f, H, W, 3] array per image or video) -> normalised patches."""
        c = 3 * self.temporal_patch_size * self.patch_size**2
        patches, grids = zip(*(self._patches(frames) for frames in items)) if items else ((), ())
        pixels = np.concatenate(patches) if patches else np.zeros((0, c), np.float32)
        return ImageInputs(pixels, np.array(grids, dtype=np.int64).reshape(-1, 3), list(items))

    def _patches(self, frames: np.ndarray) -> tuple[np.ndarray, list[int]]:
        x = (frames.astype(np.float64) * self.rescale_factor).astype(np.float32)  # [f, H, W, C]
        mean, std = np.array(self.mean, np.float32), np.array(self.std, np.float32)
        video = ((x - mean) / std).transpose(0, 3, 1, 2)  # [f, C, H, W]
        f, _, height, width = video.shape
        p, m, tp = self.patch_size, self.merge_size, self.temporal_patch_size
        gt, gh, gw = f // tp, height // p, width // p
        if self.block_major:
            x = video.reshape(gt, tp, 3, gh // m, m, p, gw // m, m, p)
            # -> (t, block row, block col, row in block, col in block, C, t_p, py, px)
            x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
        else:
            # -> (t, row, col, C, t_p, py, px)
            x = video.reshape(gt, tp, 3, gh, p, gw, p).transpose(0, 3, 5, 2, 1, 4, 6)
        return np.ascontiguousarray(x.reshape(gt * gh * gw, 3 * tp * p * p)), [gt, gh, gw]


_KNOWN = {
    "patch_size",
    "merge_size",
    "temporal_patch_size",
    "min_pixels",
    "max_pixels",
    "size",
    "image_mean",
    "image_std",
    "rescale_factor",
    "resample",
    "do_resize",
    "do_rescale",
    "do_normalize",
    "do_convert_rgb",
}


def _is_pil(x) -> bool:
    from PIL import Image

    return isinstance(x, Image.Image)


def load_image(source) -> object:
    """A PIL image from a path (or an HWC uint8 array); unreadable or absurd images raise DataError."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, np.ndarray):
        return Image.fromarray(source)
    path = Path(source)
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height * len(img.getbands()) > MAX_IMAGE_BYTES:
                raise DataError(
                    f"{path}: image of {width}x{height} pixels is too large "
                    f"(over {MAX_IMAGE_BYTES >> 20} MiB decoded)"
                )
            img.load()
            return img.copy()
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None


def to_rgb(image):
    """RGB, compositing any transparency onto white (as the reference processors do)."""
    from PIL import Image

    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")
