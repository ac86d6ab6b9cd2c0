"""Checkpoint tensors in and out: name/layout rules, sharded safetensors, strict loading.

A family's ``hf.py`` describes its checkpoint as a list of :class:`Rule` s, each relating one of our
parameters to the tensor(s) a checkpoint stores for it. One rule list serves both directions.

Layouts. Our linears are Paddle's [in, out]; HF stores [out, in]. ``fused`` parameters concatenate
several HF linears along ``out`` (``qkv_proj`` = q|k|v, ``up_gate_proj`` = gate|up); ``experts`` stack
E such fused matrices into [E, in, out]. Paddle-format ERNIE checkpoints are already [in, out] and
fused, so their rules use ``transpose=False`` and have one source per tensor.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from erniekit.errors import CheckpointError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


@dataclass(frozen=True)
class Rule:
    """Our parameter ``internal`` <-> checkpoint tensors ``external``.

    kind:
      copy    same tensor (norms, embeddings)
      row     the checkpoint holds it as a row [1, n] (ERNIE's expert-score correction bias); with
              ``sizes=(i, k)`` as row i of a [k, n] tensor that k parameters share (multimodal ERNIE)
      linear  one linear weight, transposed when the checkpoint is [out, in]
      fused   several linears (or biases) concatenated along out; ``sizes`` gives each part's width
      experts E groups of ``len(sizes)`` fused linears stacked on a new first axis
      patch   a conv patch embedding [out, C, p, p] (``sizes=(C, p, p)``) as our linear [C*p*p, out]
    """

    internal: str
    external: tuple[str, ...]
    kind: str = "copy"
    sizes: tuple[int, ...] = ()


def _t(a: np.ndarray, transpose: bool) -> np.ndarray:
    return a.T if transpose and a.ndim == 2 else a


def rule_to_internal(rule: Rule, get: Callable[[str], np.ndarray], transpose: bool) -> np.ndarray:
    if rule.kind == "copy":
        return get(rule.external[0])
    if rule.kind == "row":
        index, rows = rule.sizes or (0, 1)
        return get(rule.external[0]).reshape([rows, -1])[index]
    if rule.kind == "linear":
        return _t(get(rule.external[0]), transpose)
    if rule.kind == "fused":
        return np.concatenate([_t(get(n), transpose) for n in rule.external], axis=-1)
    if rule.kind == "patch":
        weight = get(rule.external[0])
        return np.ascontiguousarray(weight.reshape(weight.shape[0], -1).T)
    if rule.kind == "experts":
        per = len(rule.sizes)
        groups = [rule.external[i : i + per] for i in range(0, len(rule.external), per)]
        return np.stack([np.concatenate([_t(get(n), transpose) for n in g], axis=-1) for g in groups])
    raise ValueError(f"unknown rule kind {rule.kind}")


def to_external(
    rules: Iterable[Rule], arrays: Mapping[str, np.ndarray], transpose: bool
) -> dict[str, np.ndarray]:
    """Checkpoint tensors of our ``arrays``; rows that several parameters share are assembled."""
    out: dict[str, np.ndarray] = {}
    for rule in rules:
        if rule.kind == "row" and rule.sizes:
            index, rows = rule.sizes
            value = arrays[rule.internal]
            out.setdefault(rule.external[0], np.zeros((rows, value.size), value.dtype))[index] = value
        else:
            out.update(rule_to_external(rule, arrays[rule.internal], transpose))
    return out


def rule_to_external(rule: Rule, value: np.ndarray, transpose: bool) -> dict[str, np.ndarray]:
    if rule.kind == "copy":
        return {rule.external[0]: value}
    if rule.kind == "row":
        if rule.sizes:
            raise ValueError(f"{rule.internal}: a shared row is assembled by to_external")
        return {rule.external[0]: value.reshape([1, -1])}
    if rule.kind == "linear":
        return {rule.external[0]: np.ascontiguousarray(_t(value, transpose))}
    if rule.kind == "patch":
        return {rule.external[0]: np.ascontiguousarray(value.T.reshape(value.shape[1], *rule.sizes))}
    cuts = np.cumsum(rule.sizes)[:-1]
    if rule.kind == "fused":
        parts = np.split(value, cuts, axis=-1)
        return {n: np.ascontiguousarray(_t(p, transpose)) for n, p in zip(rule.external, parts)}
    if rule.kind == "experts":
        names = iter(rule.external)
        return {
            next(names): np.ascontiguousarray(_t(p, transpose))
            for expert in value
            for p in np.split(expert, cuts, axis=-1)
        }
    raise ValueError(f"unknown rule kind {rule.kind}")


def external_shapes(
    rule: Rule, internal_shape: tuple[int, ...], transpose: bool
) -> dict[str, tuple[int, ...]]:
    """The shape each checkpoint tensor of ``rule`` must have, given our parameter's shape."""

    def part(in_dim: int, width: int) -> tuple[int, ...]:
        return (width, in_dim) if transpose else (in_dim, width)

    if rule.kind == "copy":
        return {rule.external[0]: internal_shape}
    if rule.kind == "row":
        return {rule.external[0]: ((rule.sizes or (0, 1))[1], *internal_shape)}
    if rule.kind == "linear":
        return {rule.external[0]: tuple(reversed(internal_shape)) if transpose else internal_shape}
    if rule.kind == "fused":
        if len(internal_shape) == 1:  # fused biases
            return {n: (w,) for n, w in zip(rule.external, rule.sizes)}
        return {n: part(internal_shape[0], w) for n, w in zip(rule.external, rule.sizes)}
    if rule.kind == "patch":
        return {rule.external[0]: (internal_shape[1], *rule.sizes)}
    if rule.kind == "experts":
        widths = rule.sizes * internal_shape[0]
        return {n: part(internal_shape[1], w) for n, w in zip(rule.external, widths)}
    raise ValueError(f"unknown rule kind {rule.kind}")


# ---------------------------------------------------------------------------------------------------
# safetensors directories (single file or sharded with an index)


class TensorSource:
    """Lazy access to every tensor of a model directory, as float32 (or int) NumPy arrays.

    Tensors are read with plain file reads (safetensors' layout: an 8-byte header length, a JSON header
    of dtype, shape and byte offsets, then the data), not through a memory map: a map keeps every page
    it has read resident in this process, so loading a model through one held the whole checkpoint in
    RSS next to the model (1.6 GB for the 0.3B).
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        index = self.directory / INDEX_NAME
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        elif (self.directory / SINGLE_NAME).is_file():
            files = [SINGLE_NAME]
        else:
            files = sorted(p.name for p in self.directory.glob("*.safetensors"))
            if not files:
                raise CheckpointError(f"{self.directory}: no model.safetensors or {INDEX_NAME} found")
        self._headers: dict[str, tuple[int, dict]] = {}  # file -> (data start, its JSON header)
        self.location: dict[str, str] = {}
        for name in files:
            path = self.directory / name
            if not path.is_file():
                raise CheckpointError(f"{index}: lists shard {name}, which does not exist")
            self._headers[name] = _read_header(path)
            for key in self._headers[name][1]:
                if key != "__metadata__":
                    self.location[key] = name
        self._stored = {k: k for k in self.location}  # our name -> the name in the file

    def rename(self, names: Mapping[str, str]) -> None:
        """Address tensors by other names: ``names`` maps each new name to the stored one."""
        self._stored = dict(names)
        self.location = {new: self.location[old] for new, old in names.items()}

    def keys(self) -> list[str]:
        return list(self.location)

    def _entry(self, key: str) -> dict:
        return self._headers[self.location[key]][1][self._stored[key]]

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._entry(key)["shape"])

    def __contains__(self, key: str) -> bool:
        return key in self.location

    def get(self, key: str) -> np.ndarray:
        if key not in self.location:
            raise CheckpointError(f"{self.directory}: missing tensor {key}")
        file = self.location[key]
        start, _ = self._headers[file]
        entry = self._entry(key)
        begin, end = entry["data_offsets"]
        kind = entry["dtype"]
        if kind not in _DTYPES:
            raise CheckpointError(f"{self.directory / file}: tensor {key} has unsupported dtype {kind}")
        raw = bytearray(end - begin)  # read straight into a writable buffer: no second copy
        with open(self.directory / file, "rb") as f:
            f.seek(start + begin)
            got = f.readinto(raw)
        if got != end - begin:
            raise CheckpointError(f"{self.directory / file}: truncated inside tensor {key}")
        value = np.frombuffer(raw, dtype=_DTYPES[kind]).reshape(entry["shape"])
        if kind == "BF16":  # the upper half of a float32
            return (value.astype(np.uint32) << 16).view(np.float32)
        return value if value.dtype in (np.float32, np.int64, np.int32) else value.astype(np.float32)


_DTYPES = {
    "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}  # fmt: skip


def _read_header(path: Path) -> tuple[int, dict]:
    """(offset of the data, the JSON header) of a safetensors file."""
    with open(path, "rb") as f:
        head = f.read(8)
        size = int.from_bytes(head, "little") if len(head) == 8 else -1
        text = f.read(size) if 0 < size < 100_000_000 else b""
    try:
        return 8 + size, json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: not a safetensors file (unreadable header)") from None


def _paddle():
    import paddle

    return paddle


def parse_size(text: str | int) -> int:
    """'5GB' -> 5_000_000_000 bytes (decimal units, as HF does); ints pass through."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", text, flags=re.IGNORECASE)
    if not m:
        raise ValueError(f"cannot read size {text!r}; use forms like 500MB or 5GB")
    unit = (m.group(2) or "B").upper()
    scale = {
        "B": 1,
        "KB": 10**3,
        "MB": 10**6,
        "GB": 10**9,
        "TB": 10**12,
        "KIB": 2**10,
        "MIB": 2**20,
        "GIB": 2**30,
        "TIB": 2**40,
    }[unit]
    return int(float(m.group(1)) * scale)


def save_safetensors_dir(
    tensors: Mapping[str, np.ndarray],
    directory: str | Path,
    dtype: str = "float32",
    max_shard_size: int | str = "5GB",
    keep_float32: Iterable[str] = (),
) -> list[str]:
    """Write ``model.safetensors`` or ``model-0000i-of-0000n.safetensors`` + index; returns file names.

    Floating tensors are stored in ``dtype`` except names containing any of ``keep_float32``.
    """
    import paddle
    from safetensors.paddle import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    limit = parse_size(max_shard_size)
    keep = tuple(keep_float32)
    itemsize = {"float32": 4, "bfloat16": 2, "float16": 2}[dtype]
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(tensors, key=_natural_key):
        value = tensors[name]
        nbytes = value.size * (4 if any(k in name for k in keep) else itemsize)
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][name] = value
        size += nbytes
    names = (
        [SINGLE_NAME]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    weight_map, total = {}, 0
    for file_name, shard in zip(names, shards):
        out = {}
        for name, value in shard.items():
            t = paddle.to_tensor(value)
            if np.issubdtype(value.dtype, np.floating) and not any(k in name for k in keep):
                t = t.astype(dtype)
            out[name] = t
            weight_map[name] = file_name
            total += t.numel().item() * t.element_size()
        save_file(out, str(directory / file_name), metadata={"format": "pt"})
    for stale in directory.glob("model*.safetensors*"):
        if stale.name not in names and stale.name != INDEX_NAME:
            stale.unlink()
    index = directory / INDEX_NAME
    if len(names) > 1:
        index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    elif index.exists():
        index.unlink()
    return names


def _natural_key(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def check_and_assign(
    model, arrays: Mapping[str, np.ndarray], origin: str, required: Iterable[str] | None = None
) -> None:
    """Copy ``arrays`` into ``model``'s parameters and buffers; refuse missing, unknown or misshaped ones.

    ``required`` names the tensors that must be present (default: all of them); a LoRA checkpoint, for
    instance, carries only the adapters and buffers, the base weights coming from the model itself.
    """
    state = model if isinstance(model, Mapping) else model.state_dict()
    need = list(state) if required is None else list(required)
    missing = [k for k in need if k not in arrays]
    if missing:
        raise CheckpointError(
            f"{origin}: no weights for {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    unexpected = [k for k in arrays if k not in state]
    if unexpected:
        raise CheckpointError(f"{origin}: unexpected tensor {unexpected[0]} for this model configuration")
    for key, value in arrays.items():
        target = state[key]
        if tuple(value.shape) != tuple(target.shape):
            raise CheckpointError(
                f"{origin}: tensor {key} has shape {list(value.shape)}, "
                f"the model expects {list(target.shape)}"
            )
        target.set_value(_paddle().to_tensor(value).astype(target.dtype))
