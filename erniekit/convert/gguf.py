"""GGUF (llama.cpp) -> a Hugging Face model directory: config.json, safetensors, tokenizer.json.

    erniekit convert gguf SmolLM2-135M-Instruct.Q4_1.gguf --out models/SmolLM2-135M-Instruct

The file's layout is models/llama/gguf.py's, its vocabulary tokenizer/gguf.py's; tensors are dequantised
to float32. Note: a quantised file's weights are its dequantised values, not the original checkpoint's;
``lora.quantize: q4_1`` (or ``q8_0``) over such a directory recovers the file's own blocks exactly, and
``model.path`` may also name the ``.gguf`` file itself.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from erniekit.manifest import sealed
from erniekit.models.common.weights import save_safetensors_dir
from erniekit.models.llama.gguf import GGUFSource
from erniekit.models.llama.hf import config_from_args
from erniekit.tokenizer.gguf import build_tokenizer_json

log = logging.getLogger(__name__)


def convert_gguf(path: str | Path, out: str | Path) -> Path:
    path, out = Path(path), Path(out)
    source = GGUFSource(path)
    tensors = {name: source.get(name) for name in source.location}
    with sealed(out):
        _write_hf(out, tensors, source.args, source.reader)
    log.info("converted %s (%s, %d tensors) to %s", path.name, source.arch, len(tensors), out)
    return out


def _write_hf(out: Path, tensors: dict, args, reader) -> None:
    save_safetensors_dir(tensors, out)
    config = config_from_args(args)
    config["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = {
        k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if config[k] is not None
    }
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    tokenizer_json, tokenizer_config = build_tokenizer_json(reader)
    (out / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False) + "\n")
    (out / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n"
    )
