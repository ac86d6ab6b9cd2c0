"""LoRA adapters in the Hugging Face PEFT format (``adapter_config.json`` + ``adapter_model.safetensors``).

PEFT stores ``lora_A.weight`` [r, in] and ``lora_B.weight`` [out, r] per HF module. Our adapter on a fused
layer becomes one adapter per active part: the shared A is repeated, B is cut by columns, which is exactly
the same update.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from erniekit.config.schema import LoraConfig
from erniekit.errors import CheckpointError
from erniekit.peft.lora import LoRAExperts, LoRALinear, lora_layers

PEFT_PREFIX = "base_model.model."


def hf_module_namer(args) -> tuple[Callable[[str], str | None], bool]:
    """Our module name -> the transformers module PEFT names it by: the family's ``hf.peft_module`` (None
    where transformers' modules are shaped differently), else the name under ``model.``; and whether
    the family gave its own."""
    from erniekit.models import family

    custom = getattr(family(args.family).hf, "peft_module", None)
    return custom or (lambda name: f"model.{name}"), custom is not None


def peft_tensors(model) -> tuple[dict[str, np.ndarray], list[str]]:
    """The adapter tensors under PEFT names, and the HF module names they target. A family's
    ``hf.peft_module(our module name)`` gives the transformers module a layer is (default: under
    ``model.``), or None where transformers' modules are shaped differently."""
    module_of, custom = hf_module_namer(model.args)
    tensors: dict[str, np.ndarray] = {}
    targets: set[str] = set()
    for name, layer in lora_layers(model):
        if isinstance(layer, LoRAExperts):
            raise CheckpointError(
                "LoRA on routed MoE experts has no PEFT adapter form (transformers keeps "
                "experts fused); export with --merge-lora instead"
            )
        assert isinstance(layer, LoRALinear)
        a = layer.lora_A.numpy().T  # [r, in]
        b = layer.lora_B.numpy()
        parent, _, _ = name.rpartition(".")
        start = 0
        for part in layer.parts:
            if part.active:
                hf_module = module_of(f"{parent}.{part.name}")
                if hf_module is None:
                    raise CheckpointError(
                        f"LoRA on {name} has no PEFT adapter form (transformers' module is shaped "
                        "differently); export with --merge-lora instead"
                    )
                module = f"{PEFT_PREFIX}{hf_module}"
                tensors[f"{module}.lora_A.weight"] = np.ascontiguousarray(a)
                tensors[f"{module}.lora_B.weight"] = np.ascontiguousarray(b[:, start : start + part.width].T)
                # a VL model has leaf names that mean two things (the resampler's "mlp" is a linear,
                # a decoder layer's "mlp" its feed-forward block): it lists whole module names
                targets.add(hf_module if custom else part.name)
            start += part.width
    if not tensors:
        raise CheckpointError("this model has no LoRA adapters to export")
    return tensors, sorted(targets)


def save_peft_adapter(model, out_dir: str | Path, lora: LoraConfig, base_model: str | None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors, targets = peft_tensors(model)
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "use_rslora": lora.rslora,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "modules_to_save": None,
        "base_model_name_or_path": base_model,
    }
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out
