"""Model families, and loading/saving them in the Hugging Face format.

    model = load_model("path/to/ERNIE-4.5-0.3B-PT")         # config.json + (sharded) safetensors
    model = build_model("ernie4_5/debug", seed=0)            # a named flavor, randomly initialised
    save_pretrained(model, "out/")                           # what transformers' from_pretrained reads

A family is a package ``erniekit.models.<family>`` with ``model.py`` (``build``), ``hf.py``
(config.json and weight layout) and ``flavors.py`` (named shapes).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

from erniekit.errors import CheckpointError
from erniekit.models.common.args import ModelArgs
from erniekit.resources import resolve_path

FAMILIES = ("ernie4_5", "llama", "ernie4_5_vl", "paddleocr_vl")
_TIED_HEAD = "lm_head.weight"


def family(name: str) -> ModuleType:
    """The ``hf``-carrying namespace of a family: ``family("ernie4_5").hf.args_from_config(...)``."""
    if name not in FAMILIES:
        raise CheckpointError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    pkg = importlib.import_module(f"erniekit.models.{name}")
    for sub in ("model", "hf", "flavors"):
        importlib.import_module(f"erniekit.models.{name}.{sub}")
    return pkg


def family_of_model_type(model_type: str) -> ModuleType:
    for name in FAMILIES:
        fam = family(name)
        if model_type in fam.hf.MODEL_TYPES:
            return fam
    raise CheckpointError(f"config.json: model_type {model_type!r} is not supported")


def flavor_args(flavor: str) -> ModelArgs:
    """``"ernie4_5/debug"`` -> its ModelArgs."""
    name, _, size = flavor.partition("/")
    flavors = family(name).flavors.FLAVORS
    if size not in flavors:
        raise CheckpointError(f"unknown flavor {flavor!r}; {name} has: {', '.join(flavors)}")
    return flavors[size]


def list_flavors() -> list[str]:
    return [f"{name}/{size}" for name in FAMILIES for size in family(name).flavors.FLAVORS]


def build_model(spec: str | ModelArgs, seed: int | None = None, dtype: str = "float32"):
    """A randomly initialised model of a flavor name or ModelArgs (seeded when ``seed`` is given)."""
    import paddle

    args = flavor_args(spec) if isinstance(spec, str) else spec
    if seed is not None:
        paddle.seed(seed)
    model = family(args.family).model.build(args)
    return _cast(model, dtype)


def _cast(model, dtype: str):
    if dtype == "float32":
        return model
    keep = family(model.args.family).hf.KEEP_FLOAT32
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.dtype.name == "FP32" and not any(k in name for k in keep) and tensor.ndim > 0:
            tensor.set_value(tensor.astype(dtype))
    return model


def read_config(path: str | Path) -> dict:
    config_path = resolve_path(path) / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{path}: not a model directory (no config.json)")
    try:
        return json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_path}: invalid JSON at line {e.lineno}: {e.msg}") from None


def load_args(path: str | Path) -> ModelArgs:
    """The shape of the model in a directory's config.json, or in a GGUF file's metadata."""
    from erniekit.models.llama.gguf import is_gguf, open_gguf, read_args

    if is_gguf(path):
        return read_args(open_gguf(path))[1]
    cfg = read_config(path)
    fam = family_of_model_type(cfg.get("model_type", ""))
    try:
        return fam.hf.args_from_config(cfg)
    except KeyError as e:
        raise CheckpointError(f"{Path(path) / 'config.json'}: missing key {e.args[0]}") from None


def load_model(path: str | Path, dtype: str = "float32", store: Callable | None = None):
    """Build the model described by ``path/config.json`` and load its safetensors weights (or, for a
    ``.gguf`` file, the model its metadata describes, from its tensors).

    Refuses a checkpoint with a missing, unexpected (beyond known ignorable ones) or wrong-shaped
    tensor, naming that tensor. Tensors are read one at a time. ``store(model)``, when given, runs on
    the model built without memory (``paddle.LazyGuard``) and returns {parameter name: setter} for the
    tensors the caller keeps its own way; each setter receives its array as it is read (QLoRA quantises
    its frozen base so, and the float base never exists whole).
    """
    import contextlib

    import paddle

    from erniekit.manifest import verify
    from erniekit.models.common.heads import SCORE, SCORE_RULE, attach_head, is_score_config
    from erniekit.models.common.weights import (
        TensorSource,
        check_and_assign,
        external_shapes,
        rule_to_internal,
    )
    from erniekit.models.llama.gguf import GGUFSource, is_gguf

    scorer = False
    if is_gguf(path):  # a llama.cpp file: its tensors dequantised one at a time as they are read
        source = GGUFSource(path)
        args = source.args
    else:
        args = load_args(path)
        scorer = is_score_config(read_config(path))
        verify(resolve_path(path), missing="ignore")  # an erniekit export or conversion has a manifest
        source = TensorSource(resolve_path(path))
    fam = family(args.family)
    with paddle.LazyGuard() if store else contextlib.nullcontext():
        model = fam.model.build(args)
        if scorer:  # a reward model: the decoder and its score head, no language-model head
            attach_head(model, SCORE)
    if hasattr(fam.hf, "canonical_names"):  # families whose releases place some tensors differently
        source.rename(fam.hf.canonical_names(source.keys()))
    layout = fam.hf.detect_layout(source.keys())
    rules = fam.hf.weight_rules(args, layout)
    if scorer:
        rules = [r for r in rules if r.internal != _TIED_HEAD] + [SCORE_RULE]
    transpose = layout == "hf"
    state = model.state_dict()
    expected = {}
    for rule in rules:
        expected.update(external_shapes(rule, tuple(state[rule.internal].shape), transpose))
    for name, shape in expected.items():
        if name not in source:
            raise CheckpointError(f"{path}: missing tensor {name}")
        if source.shape(name) != shape:
            raise CheckpointError(
                f"{path}: tensor {name} has shape {list(source.shape(name))}, "
                f"expected {list(shape)} for this config.json"
            )
    ignorable = fam.hf.IGNORE_UNEXPECTED + ((_TIED_HEAD,) if args.tie_word_embeddings else ())
    extra = [k for k in source.location if k not in expected and not any(p in k for p in ignorable)]
    if extra:
        raise CheckpointError(f"{path}: unexpected tensor {extra[0]} (not part of this config.json's model)")
    unread = set(state) - {r.internal for r in rules} - ({_TIED_HEAD} if scorer else set())
    if unread:
        raise CheckpointError(f"{path}: no weights for {sorted(unread)[0]}")
    setters = store(model) if store else {}
    for rule in rules:
        value = rule_to_internal(rule, source.get, transpose)
        if rule.internal in setters:
            setters[rule.internal](value)
        else:
            check_and_assign(state, {rule.internal: value}, str(path), required=())
    return _cast(model, dtype)


def adapt_tokenizer(tokenizer, args: ModelArgs, chosen: str | None = None) -> None:
    """A vision-language model's prompts render image parts its family's way: unless a template was
    ``chosen`` (data.template), give the tokenizer its family's template."""
    if args.vision is not None and chosen is None:
        tokenizer.set_template(family(args.family).hf.CHAT_TEMPLATE)


PROCESSOR_CONFIG = "preprocessor_config.json"


def image_processor(
    args: ModelArgs,
    directory: str | Path | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
):
    """How a vision-language model's images are resized and patched: the family's rules, with the
    values of ``directory/preprocessor_config.json`` when the model directory has one, and the pixel
    budgets given here (data.image_min_pixels / image_max_pixels) over both."""
    import dataclasses

    from erniekit.data.images import ImageProcessor

    if args.vision is None:
        raise CheckpointError(f"a {args.family} model reads no images")
    defaults = dict(
        patch_size=args.vision.patch_size,
        merge_size=args.vision.spatial_merge_size,
        **family(args.family).hf.IMAGE_PROCESSOR,
    )
    path = resolve_path(directory) / PROCESSOR_CONFIG if directory is not None else None
    processor = ImageProcessor(**defaults)
    if path is not None and path.is_file():
        try:
            processor = ImageProcessor.from_config(json.loads(path.read_text()), **defaults)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    budgets = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
    return dataclasses.replace(processor, **budgets)


def state_dict_numpy(model) -> dict[str, np.ndarray]:
    from erniekit.tensors import to_numpy

    return {k: to_numpy(v) for k, v in model.state_dict().items()}


def to_hf_tensors(
    model, arrays: dict[str, np.ndarray] | None = None, layout: str = "hf"
) -> dict[str, np.ndarray]:
    """Our parameters in the family's HF names and layouts, or (``layout="paddle"``) ERNIE's Paddle
    checkpoint layout: ``ernie.`` names, fused qkv/up_gate, Linear weights [in, out]."""
    from erniekit.models.common.heads import SCORE_RULE
    from erniekit.models.common.weights import to_external

    fam = family(model.args.family)
    arrays = state_dict_numpy(model) if arrays is None else arrays
    rules = fam.hf.weight_rules(model.args, layout)
    if SCORE_RULE.internal in arrays:  # a reward model: its score head instead of the LM head
        rules = [r for r in rules if r.internal != _TIED_HEAD] + [SCORE_RULE]
    return to_external(rules, arrays, transpose=layout == "hf")


def save_pretrained(
    model,
    out_dir: str | Path,
    dtype: str = "float32",
    max_shard_size: int | str = "5GB",
    arrays: dict[str, np.ndarray] | None = None,
    processor=None,
    layout: str = "hf",
    pad_token_id: int | None = None,
) -> Path:
    """Write ``config.json``, ``generation_config.json`` and safetensors that transformers loads (or, in
    ERNIE's ``paddle`` layout, that ERNIEKit and FastDeploy load); a vision-language model also gets its
    ``preprocessor_config.json`` (``processor``, or the family's). A model with a ``score`` head is written
    as the family's sequence classifier (a reward model), scoring before ``pad_token_id``."""
    from erniekit.models.common.weights import save_safetensors_dir

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from erniekit.models.common.heads import SCORE_RULE, score_config

    fam = family(model.args.family)
    config = fam.hf.config_from_args(model.args)
    config["dtype"] = dtype
    tensors = to_hf_tensors(model, arrays, layout)
    if SCORE_RULE.external[0] in tensors:
        config = score_config(config, config.get("pad_token_id") if pad_token_id is None else pad_token_id)
    save_safetensors_dir(tensors, out_dir, dtype, max_shard_size, fam.hf.KEEP_FLOAT32)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = {
        k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if config.get(k) is not None
    }
    (out_dir / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    if model.args.vision is not None:
        processor = processor or image_processor(model.args)
        (out_dir / PROCESSOR_CONFIG).write_text(json.dumps(processor.to_config(), indent=2) + "\n")
    return out_dir
