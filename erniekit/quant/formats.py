"""Weight-only quantisation formats for frozen bases: int8, int4, NF4 and GGUF's Q8_0 and Q4_1 blocks.

A Paddle Linear weight is [K, N] (in, out); every format quantises each output column in groups of
``group`` consecutive input rows, so a group's scale multiplies one contiguous run of the reduction:

* ``int8``: symmetric, one scale per output column (``group`` = K), codes in [-127, 127];
* ``int4``: symmetric, one scale per group (default 128 rows), codes in [-7, 7], two per byte;
* ``nf4``: QLoRA's NormalFloat4 (16 levels at the quantiles of a standard normal, scaled by each group's
  absmax; default 64 rows), two codes per byte, and the absmax scales themselves double-quantised: to
  int8 in blocks of 256 around their mean, with one float32 scale per block;
* ``q8_0`` and ``q4_1``: llama.cpp's block formats (groups of 32): Q8_0 is int8 codes with one float16
  scale per block; Q4_1 is affine, codes 0..15 with a float16 scale and a float16 minimum per block
  (x = d q + m). A base converted from such a GGUF holds exactly the values these formats represent,
  so quantising it again recovers the file's own blocks (tests/unit/test_quant.py) instead of rounding
  them a second time onto another grid.

``quantize`` runs once, in NumPy, when a base is loaded; ``dequantize`` rebuilds the float weight in
Paddle for one matmul (see linear.py). Storage per weight, K x N = 4 bytes each in fp32: int8 1 + 4/K,
int4 0.5 + 4/128, nf4 0.5 + (1 + 8/256)/64 bytes per weight (each block of 256 int8 scales keeps a float32
step and mean; the last block is padded), q8_0 1 + 2/32, q4_1 0.5 + 4/32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import paddle

FORMATS = ("int8", "int4", "nf4", "q8_0", "q4_1")
DEFAULT_GROUP = {"int8": 0, "int4": 128, "nf4": 64, "q8_0": 32, "q4_1": 32}  # 0: the whole input dimension
SCALE_BLOCK = 256  # NF4's double quantisation: absmax scales per int8 block

# QLoRA's NF4 levels (Dettmers et al. 2023, appendix E): quantiles of N(0, 1) normalised to [-1, 1],
# with an exact zero
NF4_LEVELS = np.array(
    [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ],
    dtype=np.float32,
)  # fmt: skip


@dataclass
class Quantized:
    """A quantised [K, N] weight: ``codes`` (int8 [K, N], or uint8 [K/2, N] holding two 4-bit codes),
    the per-group ``scales`` [K/group, N] (for nf4: int8 codes of the absmax, with ``scale_scale`` and
    ``scale_mean`` per block of 256), the format and the group size."""

    format: str
    shape: tuple[int, int]
    group: int
    codes: np.ndarray
    scales: np.ndarray
    scale_scale: np.ndarray | None = None
    scale_mean: np.ndarray | None = None
    mins: np.ndarray | None = None  # q4_1: each group's minimum

    @property
    def nbytes(self) -> int:
        parts = (self.codes, self.scales, self.scale_scale, self.scale_mean, self.mins)
        return sum(p.nbytes for p in parts if p is not None)


def quantize(weight: np.ndarray, fmt: str, group: int = 0) -> Quantized:
    """Quantise a float [K, N] weight; ``group`` 0 takes the format's default."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown quantisation {fmt!r}; one of {', '.join(FORMATS)}")
    w = np.asarray(weight, dtype=np.float32)
    k, n = w.shape
    group = group or DEFAULT_GROUP[fmt] or k
    if k % group or (fmt != "int8" and group % 2):
        raise ValueError(f"{fmt}: the input dimension {k} is not a multiple of the group size {group}")
    grouped = w.reshape(k // group, group, n)
    absmax = np.abs(grouped).max(axis=1)  # [K/group, N]
    safe = np.where(absmax > 0, absmax, 1.0)
    if fmt == "int8":
        scales = safe / 127.0
        codes = np.clip(np.rint(grouped / scales[:, None]), -127, 127).astype(np.int8).reshape(k, n)
        return Quantized(fmt, (k, n), group, codes, scales.astype(np.float32))
    if fmt == "int4":
        scales = (safe / 7.0).astype(np.float32)
        codes = np.clip(np.rint(grouped / scales[:, None]), -7, 7).astype(np.int16) + 8  # 1..15
        return Quantized(fmt, (k, n), group, _pack(codes.reshape(k, n)), scales)
    if fmt == "q8_0":
        scales = (safe / 127.0).astype(np.float16)
        codes = np.clip(np.rint(grouped / scales[:, None].astype(np.float32)), -127, 127)
        return Quantized(fmt, (k, n), group, codes.astype(np.int8).reshape(k, n), scales)
    if fmt == "q4_1":
        low = grouped.min(axis=1)
        mins = low.astype(np.float16)
        steps = ((grouped.max(axis=1) - low) / 15.0).astype(np.float16)
        steps = np.where(steps > 0, steps, np.float16(1.0))
        normed = (grouped - mins[:, None].astype(np.float32)) / steps[:, None].astype(np.float32)
        codes = np.clip(np.rint(normed), 0, 15).astype(np.uint8).reshape(k, n)
        return Quantized(fmt, (k, n), group, _pack(codes), steps, mins=mins)
    # nf4: the scales are double-quantised first, and the codes chosen against the scales as stored
    scale_codes, scale_scale, scale_mean = _quantize_scales(safe.astype(np.float32))
    stored = _dequantize_scales(scale_codes, scale_scale, scale_mean, safe.shape)
    normed = np.clip(grouped / stored[:, None], -1.0, 1.0)
    codes = np.searchsorted((NF4_LEVELS[1:] + NF4_LEVELS[:-1]) / 2, normed)  # the nearest level
    return Quantized(fmt, (k, n), group, _pack(codes.reshape(k, n)), scale_codes, scale_scale, scale_mean)


def dequantize(
    q: Quantized, tensors: dict[str, paddle.Tensor], dtype: str = "float32", rows: slice | None = None
) -> paddle.Tensor:
    """The float [K, N] weight from the device copies of ``q``'s arrays (``to_tensors(q)``); with
    ``rows`` only those input rows (whole groups, int8/int4: one expert of a stacked [E*K, N] weight)."""
    k, n = q.shape
    if rows is not None:
        if q.format == "nf4" or rows.start % q.group or rows.stop % q.group:
            raise ValueError(f"{q.format}: rows {rows.start}:{rows.stop} do not cut whole groups")
        return _dequantize_int(q, tensors, dtype, rows.start, rows.stop)
    if q.format != "nf4":
        return _dequantize_int(q, tensors, dtype, 0, k)
    codes = _unpack(tensors["codes"], k, n)
    levels = paddle.gather(tensors["levels"], codes.astype("int64").flatten()).reshape(
        [k // q.group, q.group, n]
    )
    scales = tensors["scale_codes"].astype("float32").reshape([-1, SCALE_BLOCK]) * tensors["scale_scale"]
    scales = (scales + tensors["scale_mean"]).flatten()[: (k // q.group) * n].reshape([k // q.group, n])
    return (levels * scales.unsqueeze(1)).reshape([k, n]).astype(dtype)


def _dequantize_int(q: Quantized, tensors: dict, dtype: str, start: int, stop: int) -> paddle.Tensor:
    n, rows = q.shape[1], stop - start
    whole = start == 0 and stop == q.shape[0]  # no slice: each slice would be one more copy

    def part(name: str, step: int) -> paddle.Tensor:
        t = tensors[name]
        return t if whole else t[start // step : stop // step]

    scales = part("scales", q.group).astype(dtype).unsqueeze(1)
    if q.format in ("int8", "q8_0"):
        values = part("codes", 1).astype(dtype)
    else:
        values = _unpack(part("codes", 2), rows, n).astype(dtype)
        values = values if q.format == "q4_1" else values - 8.0
    out = values.reshape([rows // q.group, q.group, n]) * scales
    if q.format == "q4_1":
        out = out + part("mins", q.group).astype(dtype).unsqueeze(1)
    return out.reshape([rows, n])


def to_tensors(q: Quantized) -> dict[str, paddle.Tensor]:
    out = {"codes": paddle.to_tensor(q.codes)}
    if q.format == "nf4":
        out |= {
            "scale_codes": paddle.to_tensor(q.scales),
            "scale_scale": paddle.to_tensor(q.scale_scale),
            "scale_mean": paddle.to_tensor(q.scale_mean),
            "levels": paddle.to_tensor(NF4_LEVELS),
        }
    else:
        out["scales"] = paddle.to_tensor(q.scales)
    if q.mins is not None:
        out["mins"] = paddle.to_tensor(q.mins)
    return out


def _pack(codes: np.ndarray) -> np.ndarray:
    """[K, N] codes in 0..15 -> uint8 [K/2, N]: row 2i in the low nibble, row 2i + 1 in the high one."""
    c = codes.astype(np.uint8)
    return (c[0::2] | (c[1::2] << 4)).astype(np.uint8)


def _unpack(packed: paddle.Tensor, k: int, n: int) -> paddle.Tensor:
    low = paddle.bitwise_and(packed, paddle.to_tensor(np.uint8(15)))
    high = paddle.bitwise_right_shift(packed, paddle.to_tensor(np.uint8(4)))
    return paddle.stack([low, high], axis=1).reshape([k, n])


def _quantize_scales(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NF4's double quantisation: the flat absmax scales in blocks of 256, each block centred on its
    mean and stored as int8 with one float32 scale."""
    flat = scales.reshape(-1)
    blocks = -(-flat.size // SCALE_BLOCK)
    padded = np.concatenate([flat, np.repeat(flat[-1:], blocks * SCALE_BLOCK - flat.size)]).reshape(
        blocks, -1
    )
    mean = padded.mean(axis=1, keepdims=True)
    spread = np.abs(padded - mean).max(axis=1, keepdims=True)
    step = np.where(spread > 0, spread / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint((padded - mean) / step), -127, 127).astype(np.int8)
    return codes.reshape(-1), step, mean.astype(np.float32)


def _dequantize_scales(codes: np.ndarray, step: np.ndarray, mean: np.ndarray, shape) -> np.ndarray:
    values = codes.reshape(step.shape[0], -1).astype(np.float32) * step + mean
    return values.reshape(-1)[: int(np.prod(shape))].reshape(shape)
