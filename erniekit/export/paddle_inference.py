"""A trained run -> a static Paddle program (``model.json`` + ``model.pdiparams``) for Paddle Inference.

The program maps ``input_ids`` [batch, seq] (int64) to logits [batch, seq, vocab]; LoRA adapters are
merged first. ``load_predictor`` shows the serving side: on CPU it turns oneDNN off, whose reorder
kernel crashes on the zero-sized tensors an MoE expert without tokens produces.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle
from paddle import nn

from erniekit.manifest import sealed, verify
from erniekit.peft.lora import merged_model
from erniekit.trainer.restore import restore


class LogitsProgram(nn.Layer):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids).logits


def export_paddle_inference(run: str | Path, out: str | Path) -> Path:
    _, tokenizer, model = restore(run)
    model = merged_model(model)
    out = Path(out)
    with sealed(out):
        spec = [paddle.static.InputSpec([None, None], "int64", "input_ids")]
        program = paddle.jit.to_static(LogitsProgram(model), input_spec=spec, full_graph=True)
        paddle.jit.save(program, str(out / "model"))
        tokenizer.save(out)
        meta = {
            "inputs": {"input_ids": "int64 [batch, seq]"},
            "outputs": {"logits": "float32 [batch, seq, vocab]"},
            "vocab_size": model.args.vocab_size,
            "stop_token_ids": tokenizer.stop_ids,
        }
        (out / "erniekit_inference.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def load_predictor(directory: str | Path):
    """A function ids [B, S] (int64 NumPy) -> logits, backed by a Paddle Inference predictor."""
    from paddle import inference

    directory = Path(directory)
    verify(directory)
    config = inference.Config(str(directory / "model.json"), str(directory / "model.pdiparams"))
    if not paddle.is_compiled_with_cuda():
        config.disable_gpu()
        config.disable_mkldnn()
    predictor = inference.create_predictor(config)

    def run(ids: np.ndarray) -> np.ndarray:
        handle = predictor.get_input_handle(predictor.get_input_names()[0])
        handle.reshape(list(ids.shape))
        handle.copy_from_cpu(np.ascontiguousarray(ids, dtype=np.int64))
        predictor.run()
        return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()

    return run
